//! Migrations: numbering, upgrading every older version, and a failing one leaving the file as it was.

use super::*;

#[test]
fn migrations_are_numbered_from_one_without_gaps() {
    assert!(!MIGRATIONS.is_empty());
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        assert!(m.name.starts_with(&format!("{:04}-", m.version)), "{}", m.name);
    }
}

/// Issue 13: every migration comes in both dialects (`up.sql` and
/// `postgres.sql` beside it); ARCHITECTURE.md ("The database") says how to
/// write the PostgreSQL one.
#[test]
fn every_migration_has_its_postgresql_form() {
    for m in MIGRATIONS.iter() {
        assert!(m.postgres.is_some_and(|sql| !sql.trim().is_empty()), "migrations/{}/postgres.sql is missing", m.name);
    }
}

/// Builds a database as a sweep of schema `version` left it: the first
/// `version` migrations applied by hand, with one sweep, job, epoch and
/// checkpoint in it (version 0: an empty file).
pub(super) fn create_at_version(path: &Path, version: usize) {
    std::fs::write(path, b"").unwrap();
    if version == 0 {
        return;
    }
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for m in &MIGRATIONS[..version] {
        conn.execute_batch(m.up).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64).unwrap();
    conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
    conn.execute_batch(
        "INSERT INTO sweeps (id, name, spec_json) VALUES ('old', 'old sweep', '{}');
         INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs, status)
              VALUES ('j1', '{}', 16, 2, 0.01, 0.9, 3, 'done');
         INSERT INTO sweep_jobs VALUES ('old', 'j1', 0);
         INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds)
              VALUES ('j1', 1, 1.0, 0.5, 1.1, 0.4, 0.01, 0.5);
         INSERT INTO checkpoints VALUES ('j1', 'last', 1, x'0102');",
    )
    .unwrap();
}

pub(super) fn assert_old_rows_kept(store: &Store) {
    let row = store.find_sweep(None).unwrap();
    assert_eq!((row.id.as_str(), row.name.as_str()), ("old", "old sweep"));
    let jobs = store.jobs("old").unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].status, jobs[0].epochs_done), (Status::Done, 1));
    assert_eq!(store.checkpoint("j1", "last").unwrap(), Some((1, vec![1, 2])));
}

fn tables(path: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    let names = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    names
}

pub(super) fn user_version(path: &Path) -> i64 {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
}

#[test]
fn migrations_apply_from_every_older_version_keeping_rows_and_reopening_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    for version in 0..=MIGRATIONS.len() {
        let path = dir.path().join(format!("v{version}.db"));
        create_at_version(&path, version);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), latest_version(), "from version {version}");
        if version > 0 {
            assert_old_rows_kept(&store);
        }
        drop(store);
        // Opening a current file changes neither its schema nor a byte of it.
        let schema = |p: &Path| -> Vec<String> {
            let conn = Connection::open_with_flags(p, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let mut stmt = conn.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").unwrap();
            let sql = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
            sql
        };
        let (before, bytes) = (schema(&path), std::fs::read(&path).unwrap());
        drop(Store::open(&path).unwrap());
        assert_eq!(schema(&path), before, "from version {version}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "from version {version}");
    }
}

#[test]
fn a_version_1_file_gains_feature_runs_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    create_at_version(&path, 1);
    assert!(!tables(&path).contains(&"feature_runs".to_owned()));
    let store = Store::open(&path).unwrap();
    assert!(store.schema_version().unwrap() >= 2);
    assert_old_rows_kept(&store);
    store.record_feature_run("old", "k1", false, 48, Some(1.5)).unwrap();
    assert_eq!(store.feature_runs("old").unwrap().len(), 1);
}

#[test]
fn a_failing_migration_leaves_the_file_at_its_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    create_at_version(&path, 1);
    let tables_before = tables(&path);
    // Every real migration, then one that fails half way through.
    let mut broken = MIGRATIONS.clone();
    broken.push(Migration {
        version: latest_version() + 1,
        name: "9999-broken",
        up: "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);",
        postgres: Some("CREATE TABLE half_done (x BIGINT); INSERT INTO no_such_table VALUES (1);"),
    });
    let err = Store::open_with(&path, &broken).unwrap_err();
    assert!(matches!(&err, Error::Migration { name, .. } if name == "9999-broken"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("v1.db: migration 9999-broken failed, the database is unchanged: no such table"), "{msg}");
    // Neither the broken migration nor the good ones before it are kept.
    assert_eq!(user_version(&path), 1);
    assert_eq!(tables(&path), tables_before);
    // The real list still upgrades it, rows and all.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert_old_rows_kept(&store);
}
