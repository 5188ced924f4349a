use super::*;

fn job(id: &str) -> NewJob<'_> {
    NewJob { id, config_json: "{}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 3 }
}

fn epoch(n: i64) -> EpochRow {
    EpochRow {
        epoch: n,
        train_loss: 1.0,
        train_acc: 0.5,
        valid_loss: 1.1,
        valid_acc: 0.4 + n as f64 / 100.0,
        lr: 0.01,
        seconds: 0.5,
    }
}

#[test]
fn migrations_are_numbered_from_one_without_gaps() {
    assert!(!MIGRATIONS.is_empty());
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        assert!(m.name.starts_with(&format!("{:04}-", m.version)), "{}", m.name);
    }
}

#[test]
fn open_creates_reopen_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    store
        .register_sweep(
            &NewSweep { id: "s1", name: "demo", spec_json: "{}", source: None, source_path: None },
            &[job("a")],
        )
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    assert_eq!(store.find_sweep(None).unwrap().name, "demo");
}

#[test]
fn register_is_idempotent_and_grown_sweeps_share_jobs() {
    let mut store = Store::open_in_memory().unwrap();
    let s1 = NewSweep { id: "s1", name: "demo", spec_json: "{}", source: None, source_path: None };
    let r = store.register_sweep(&s1, &[job("a"), job("b")]).unwrap();
    assert_eq!(r, Registered { new_sweep: true, new_jobs: 2, known_jobs: 0 });
    let r = store.register_sweep(&s1, &[job("a"), job("b")]).unwrap();
    assert_eq!(r, Registered { new_sweep: false, new_jobs: 0, known_jobs: 2 });
    let s2 = NewSweep { id: "s2", name: "demo", spec_json: "{}", source: None, source_path: None };
    let r = store.register_sweep(&s2, &[job("a"), job("b"), job("c")]).unwrap();
    assert_eq!(r, Registered { new_sweep: true, new_jobs: 1, known_jobs: 2 });
    assert_eq!(store.find_sweep(Some("demo")).unwrap().id, "s2");
}

#[test]
fn claim_record_finish() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .register_sweep(
            &NewSweep { id: "s", name: "n", spec_json: "{}", source: None, source_path: None },
            &[job("a"), job("b")],
        )
        .unwrap();
    let lease = Duration::from_secs(30);
    let a = store.claim("s", "me", lease).unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.attempts), ("a", 1));
    let b = store.claim("s", "other", lease).unwrap().unwrap();
    assert_eq!(b.id, "b");
    assert_eq!(store.claim("s", "third", lease).unwrap(), None);

    store.record_epoch("a", "me", &epoch(1), b"state1", true, lease).unwrap();
    store.record_epoch("a", "me", &epoch(2), b"state2", false, lease).unwrap();
    assert!(matches!(store.record_epoch("a", "other", &epoch(3), b"x", true, lease), Err(Error::LeaseLost { .. })));
    // An epoch is never recorded twice.
    assert!(store.record_epoch("a", "me", &epoch(2), b"again", false, lease).is_err());
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((2, b"state2".to_vec())));
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((1, b"state1".to_vec())));
    store.finish("a", "me", Finish::Done).unwrap();
    let rows = store.jobs("s").unwrap();
    assert_eq!(rows[0].status, Status::Done);
    assert_eq!(rows[0].best_epoch, Some(1));
    assert_eq!(rows[0].epochs_done, 2);
    assert_eq!(store.epochs("a").unwrap().len(), 2);
}

#[test]
fn expired_leases_are_claimable_again() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .register_sweep(&NewSweep { id: "s", name: "n", spec_json: "{}", source: None, source_path: None }, &[job("a")])
        .unwrap();
    store.claim("s", "dead", Duration::from_millis(0)).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let again = store.claim("s", "alive", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), ("a", 2));
    assert!(matches!(store.finish("a", "dead", Finish::Done), Err(Error::LeaseLost { .. })));
}

#[test]
fn foreign_truncated_and_newer_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "hello, this is not a database at all, not even close").unwrap();
    let err = Store::open(&text).unwrap_err().to_string();
    assert!(err.contains("notes.db: not a sweep database: not an SQLite database"), "{err}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "hello, this is not a database at all, not even close");

    // Another program's SQLite database.
    let other = dir.path().join("other.db");
    {
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);").unwrap();
    }
    let before = std::fs::read(&other).unwrap();
    let err = Store::open(&other).unwrap_err().to_string();
    assert!(err.contains("other.db: not a sweep database"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), before);

    // A sweep database cut short.
    let good = dir.path().join("good.db");
    {
        let mut store = Store::open(&good).unwrap();
        store
            .register_sweep(
                &NewSweep { id: "s", name: "n", spec_json: "{}", source: None, source_path: None },
                &[job("a")],
            )
            .unwrap();
        store.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
    }
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Store::open(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.db: the database is damaged: truncated"), "{err}");
    assert_eq!(std::fs::read(&cut).unwrap(), bytes[..bytes.len() - 1000]);

    // A database from a newer sweep.
    let newer = dir.path().join("newer.db");
    std::fs::write(&newer, &bytes).unwrap();
    {
        let conn = Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", latest_version() + 1).unwrap();
    }
    let before = std::fs::read(&newer).unwrap();
    let err = Store::open(&newer).unwrap_err().to_string();
    assert!(err.contains("written by a newer sweep"), "{err}");
    assert_eq!(std::fs::read(&newer).unwrap(), before);
}

fn sweep(id: &str) -> NewSweep<'_> {
    NewSweep { id, name: "n", spec_json: "{}", source: None, source_path: None }
}

/// Builds a database as a sweep of schema `version` left it: the first
/// `version` migrations applied by hand, with one sweep, job, epoch and
/// checkpoint in it (version 0: an empty file).
fn create_at_version(path: &Path, version: usize) {
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

fn assert_old_rows_kept(store: &Store) {
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

fn user_version(path: &Path) -> i64 {
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

#[test]
fn feature_runs_are_recorded_per_sweep_in_order() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s1"), &[job("a")]).unwrap();
    store.register_sweep(&sweep("s2"), &[job("a")]).unwrap();
    let first = store.record_feature_run("s1", "key-a", false, 200, Some(12.5)).unwrap();
    let second = store.record_feature_run("s1", "key-a", true, 200, None).unwrap();
    store.record_feature_run("s2", "key-b", true, 50, Some(0.1)).unwrap();
    assert!(second > first);
    let runs = store.feature_runs("s1").unwrap();
    let summary: Vec<_> = runs.iter().map(|r| (r.id, r.cache_key.as_str(), r.reused, r.images, r.seconds)).collect();
    assert_eq!(summary, [(first, "key-a", false, 200, Some(12.5)), (second, "key-a", true, 200, None)]);
    assert!(runs.iter().all(|r| r.sweep_id == "s1" && r.recorded_at.ends_with('Z')));
    assert_eq!(store.feature_runs("s2").unwrap().len(), 1);
    assert!(store.feature_runs("nope").unwrap().is_empty());
    // A run of a sweep that was never registered is refused (foreign key).
    assert!(store.record_feature_run("nope", "k", false, 1, None).is_err());
}

#[test]
fn a_file_damaged_in_the_middle_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    {
        let mut store = Store::open(&good).unwrap();
        let ids: Vec<String> = (0..400).map(|i| format!("job-{i:04}-{}", "x".repeat(100))).collect();
        let jobs: Vec<NewJob<'_>> = ids.iter().map(|id| job(id)).collect();
        store.register_sweep(&sweep("s"), &jobs).unwrap();
        store.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
    }
    let mut bytes = std::fs::read(&good).unwrap();
    let page_size = 4096;
    let pages = bytes.len() / page_size;
    assert!(pages >= 10, "{pages} pages");
    // One page in the middle overwritten with (seeded) random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut bytes[pages / 2 * page_size..(pages / 2 + 1) * page_size] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = Store::open(&damaged).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    let expected = format!("{}: the database is damaged: integrity check failed: ", damaged.display());
    assert!(msg.starts_with(&expected), "{msg}");
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);
    assert!(!dir.path().join("damaged.db-wal").exists());
    assert!(!dir.path().join("damaged.db-journal").exists());
}

/// Claims, trains one epoch of and finishes jobs of sweep `s` until none is left;
/// returns the ids claimed, in order.
fn claim_until_empty(path: &Path, owner: &str) -> Vec<String> {
    let lease = Duration::from_secs(60);
    let mut store = Store::open(path).unwrap_or_else(|e| panic!("{owner}: {e}"));
    let state = vec![7u8; 4096];
    let mut claimed = Vec::new();
    while let Some(job) = store.claim("s", owner, lease).unwrap_or_else(|e| panic!("{owner}: claim: {e}")) {
        store.record_epoch(&job.id, owner, &epoch(1), &state, true, lease).unwrap_or_else(|e| panic!("{owner}: {e}"));
        store.finish(&job.id, owner, Finish::Done).unwrap_or_else(|e| panic!("{owner}: {e}"));
        claimed.push(job.id);
    }
    claimed
}

const CHILD_ENV: &str = "SWEEP_STORE_CHILD";

/// Alone, one claimer drains a sweep, each job once and in order. Started by
/// [`eight_processes_claim_every_job_exactly_once`] with `SWEEP_STORE_CHILD`
/// set to `DB OUT GO`, it is one of the claiming processes instead: it waits
/// for the file GO, claims from DB, and writes the ids it claimed to OUT.
#[test]
fn claim_loop_drains_a_sweep_once_each() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let args: Vec<&str> = args.split('\n').collect();
        let [db, out, go] = args[..] else { panic!("{CHILD_ENV}: expected DB, OUT, GO, got {args:?}") };
        let start = std::time::Instant::now();
        while !Path::new(go).exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "never told to go");
            std::thread::sleep(Duration::from_millis(1));
        }
        let owner = format!("child-{}", std::process::id());
        let claimed = claim_until_empty(Path::new(db), &owner);
        std::fs::write(out, claimed.join("\n")).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let ids: Vec<String> = (0..30).map(|i| format!("j{i:02}")).collect();
    let mut store = Store::open(&path).unwrap();
    store.register_sweep(&sweep("s"), &ids.iter().map(|id| job(id)).collect::<Vec<_>>()).unwrap();
    assert_eq!(claim_until_empty(&path, "solo"), ids);
    let rows = store.jobs("s").unwrap();
    assert!(rows.iter().all(|r| r.status == Status::Done && r.attempts == 1 && r.epochs_done == 1));
    assert_eq!(store.claim("s", "late", Duration::from_secs(1)).unwrap(), None);
}

/// Issue #3: 8 processes claiming from one file at once never see "database
/// is locked", and every job is claimed exactly once.
#[test]
fn eight_processes_claim_every_job_exactly_once() {
    const PROCESSES: usize = 8;
    const JOBS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let ids: Vec<String> = (0..JOBS).map(|i| format!("job{i:03}")).collect();
    Store::open(&db).unwrap().register_sweep(&sweep("s"), &ids.iter().map(|id| job(id)).collect::<Vec<_>>()).unwrap();

    let exe = std::env::current_exe().unwrap();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let out = dir.path().join(format!("claimed-{i}.txt"));
            let arg = format!("{}\n{}\n{}", db.display(), out.display(), go.display());
            let child = std::process::Command::new(&exe)
                .args(["--exact", "tests::claim_loop_drains_a_sweep_once_each", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, arg)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    std::fs::write(&go, "").unwrap();

    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (i, (child, out)) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "child {i} failed:\n{text}");
        assert!(text.contains("1 passed"), "child {i} ran no test:\n{text}");
        assert!(!text.contains("locked"), "child {i}:\n{text}");
        for id in std::fs::read_to_string(&out).unwrap().lines().filter(|l| !l.is_empty()) {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ids);
    let store = Store::open(&db).unwrap();
    let rows = store.jobs("s").unwrap();
    assert!(rows.iter().all(|r| r.status == Status::Done && r.attempts == 1 && r.epochs_done == 1));
}
