//! Pruning (schema 4): the migration that rebuilds `jobs` keeps every row,
//! decisions are recorded with their epoch and never claimed again; ASHA's
//! waiting trials (schema 6): promoted, or pruned once nothing is left to run.

use super::*;

/// A schema-3 database with rows in every table that references `jobs`
/// migrates with every row intact, its foreign keys whole.
#[test]
fn a_version_3_file_with_rows_migrates_keeping_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    migrations::create_at_version(&path, 3);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts,
                               lease_owner, lease_expires, error, best_valid_acc, best_epoch, seconds, data_key)
                  VALUES ('j2', '{\"lr\":0.1}', 8, 4, 0.1, 0.5, 5, 'failed', 2, NULL, NULL, 'boom', 0.25, 1, 1.5, 'dk'),
                         ('j3', '{}', 8, 4, 0.1, 0.5, 5, 'running', 1, 'h:1:2', 99, NULL, NULL, NULL, 0, NULL);
             INSERT INTO sweep_jobs VALUES ('old', 'j2', 1), ('old', 'j3', 2);
             INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds)
                  VALUES ('j2', 1, 2.0, 0.1, 2.1, 0.25, 0.1, 0.75);
             INSERT INTO checkpoints VALUES ('j2', 'best', 1, x'03');
             INSERT INTO data_manifests (data_key, manifest) VALUES ('dk', '{}');",
        )
        .unwrap();
    }
    let dump = |conn: &Connection, sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| Ok((0..n).map(|i| format!("{:?}", r.get_ref(i).unwrap())).collect::<Vec<_>>().join("|")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tables = [
        "SELECT id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts, lease_owner, lease_expires,
                heartbeat_at, started_at, finished_at, error, best_valid_acc, best_epoch, seconds, data_key
         FROM jobs ORDER BY id",
        "SELECT * FROM sweep_jobs ORDER BY job_id",
        "SELECT * FROM epochs ORDER BY job_id, epoch",
        "SELECT * FROM checkpoints ORDER BY job_id, kind",
        "SELECT * FROM sweeps ORDER BY id",
        "SELECT * FROM data_manifests",
    ];
    let before: Vec<Vec<String>> = {
        let conn = Connection::open(&path).unwrap();
        tables.iter().map(|sql| dump(&conn, sql)).collect()
    };
    assert_eq!(before[0].len(), 3);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    drop(store);
    let conn = Connection::open(&path).unwrap();
    let after: Vec<Vec<String>> = tables.iter().map(|sql| dump(&conn, sql)).collect();
    assert_eq!(after, before);
    assert!(dump(&conn, "PRAGMA foreign_key_check").is_empty());
    assert_eq!(dump(&conn, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs_before_0004'"), ["Integer(0)"]);
    // The rebuilt table is strict and takes the new status; the old ones still hold.
    assert!(conn.execute("UPDATE jobs SET status = 'pruned' WHERE id = 'j2'", []).is_ok());
    assert!(conn.execute("UPDATE jobs SET status = 'stopped' WHERE id = 'j2'", []).is_err());
    // Its foreign keys still point at it.
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    assert!(conn.execute("DELETE FROM jobs WHERE id = 'j2'", []).is_err());
}

#[test]
fn a_pruned_epoch_is_recorded_with_its_decision_and_never_claimed_again() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b"), job("c")]).unwrap();
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "a");
    store.record_epoch("a", "me", &epoch(1), b"1", true, lease).unwrap();
    store.record_epoch("a", "me", &epoch(2), b"2", true, lease).unwrap();
    store.finish("a", "me", Finish::Done).unwrap();
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "b");
    store.record_epoch("b", "me", &epoch(1), b"1", true, lease).unwrap();
    // Another runner cannot prune what it does not hold.
    let lost = store.record_pruned_epoch("b", "other", &epoch(2), b"2", false, lease, Some(0), "why", false);
    assert!(matches!(lost, Err(Error::LeaseLost { .. })), "{lost:?}");
    store.record_pruned_epoch("b", "me", &epoch(2), b"2", false, lease, Some(1), "behind", false).unwrap();
    assert_eq!(store.done_jobs("s").unwrap(), 1);
    // The pruner's view of epoch 2: the others that recorded it, with their status.
    let at2 = store.values_at_epoch("s", "c", 2, Metric::ValidAcc).unwrap();
    let acc2 = epoch(2).valid_acc;
    assert_eq!(at2, [("a".to_owned(), Status::Done, acc2), ("b".to_owned(), Status::Pruned, acc2)]);
    let at2 = store.values_at_epoch("s", "a", 2, Metric::ValidLoss).unwrap();
    assert_eq!(at2, [("b".to_owned(), Status::Pruned, 1.1)]);
    assert!(store.values_at_epoch("s", "c", 3, Metric::TrainLoss).unwrap().is_empty());
    let rows = store.jobs("s").unwrap();
    assert_eq!((rows[1].status, rows[1].epochs_done), (Status::Pruned, 2));
    assert_eq!(store.checkpoint("b", "last").unwrap(), Some((2, b"2".to_vec())));
    let decision = PruneRow { job_id: "b".into(), epoch: 2, rung: Some(1), reason: "behind".into() };
    assert_eq!(store.prune_decisions("s").unwrap(), std::slice::from_ref(&decision));
    assert_eq!(store.prune_decision("b").unwrap(), Some(decision));
    assert_eq!(store.prune_decision("a").unwrap(), None);
    // Neither claimed again nor revived by --retry-failed.
    assert_eq!(store.retry_failed("s").unwrap(), 0);
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "c");
    assert_eq!(store.claim("s", "me", lease).unwrap(), None);
    assert_eq!(
        store.find_sweep(Some("s")).unwrap().counts,
        [(Status::Running, 1), (Status::Done, 1), (Status::Pruned, 1)]
    );
}

#[test]
fn a_copy_is_linked_once_its_trained_job_ends_and_shows_its_status() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b")]).unwrap();
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "a");
    assert_eq!(store.claim("s", "other", lease).unwrap().unwrap().id, "b");
    // While `a` runs, `b` is not linked; `a`'s lease is live.
    assert!(!store.link_same_as("b", "other", "a").unwrap());
    assert!(!store.lease_lapsed("a").unwrap());
    store.record_epoch("a", "me", &epoch(1), b"1", true, lease).unwrap();
    store.finish("a", "me", Finish::Done).unwrap();
    // Only by the runner that holds it.
    assert!(matches!(store.link_same_as("b", "me", "a"), Err(Error::LeaseLost { .. })));
    assert!(store.link_same_as("b", "other", "a").unwrap());
    let rows = store.jobs("s").unwrap();
    assert_eq!(
        (rows[1].status, rows[1].best_valid_acc, rows[1].best_epoch),
        (Status::Done, Some(epoch(1).valid_acc), Some(1))
    );
    assert_eq!(rows[1].epochs_done, 0, "no epoch of its own");
    assert_eq!(store.trained_as("b").unwrap().as_deref(), Some("a"));
    assert_eq!(store.trained_as("a").unwrap(), None);
    assert_eq!(store.same_as_links("s").unwrap(), [("b".to_owned(), "a".to_owned())]);
    // A linked copy is not a trial of its own for the median rule.
    assert_eq!(store.done_jobs("s").unwrap(), 1);
}

#[test]
fn a_lease_that_ran_out_has_lapsed() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b")]).unwrap();
    store.claim("s", "me", Duration::from_millis(1)).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(store.lease_lapsed("a").unwrap());
    // Pending, or unknown: nothing has lapsed.
    assert!(!store.lease_lapsed("b").unwrap());
    assert!(!store.lease_lapsed("nope").unwrap());
}

/// Schema 6: a schema-5 file keeps its decisions and links, and takes `waiting`.
#[test]
fn a_version_5_file_keeps_its_decisions_and_takes_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    migrations::create_at_version(&path, 5);
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "INSERT INTO sweeps (id, name, spec_json) VALUES ('s', 'n', '{}');
             INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs, status,
                               prune_epoch, prune_rung, prune_reason, same_as)
                  VALUES ('p', '{}', 8, 4, 0.1, 0.5, 5, 'pruned', 2, 1, 'behind', NULL),
                         ('q', '{}', 8, 2, 0.1, 0.5, 5, 'pruned', 2, 1, 'behind', 'p');
             INSERT INTO sweep_jobs VALUES ('s', 'p', 0), ('s', 'q', 1);",
        )
        .unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    let decision = PruneRow { job_id: "p".into(), epoch: 2, rung: Some(1), reason: "behind".into() };
    assert_eq!(store.prune_decision("p").unwrap(), Some(decision));
    assert_eq!(store.trained_as("q").unwrap().as_deref(), Some("p"));
    drop(store);
    let conn = Connection::open(&path).unwrap();
    assert!(conn.execute("UPDATE jobs SET status = 'waiting' WHERE id = 'p'", []).is_ok());
    assert!(conn.execute("UPDATE jobs SET status = 'paused' WHERE id = 'p'", []).is_err());
}

/// ASHA's stop waits: never claimed, promoted once (its stop forgotten),
/// and pruned for good only when nothing of the sweep is left to run.
#[test]
fn a_waiting_trial_is_promoted_or_pruned_once_nothing_is_left_to_run() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b")]).unwrap();
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "a");
    store.record_epoch("a", "me", &epoch(1), b"1", true, lease).unwrap();
    store.record_pruned_epoch("a", "me", &epoch(2), b"2", false, lease, Some(1), "behind", true).unwrap();
    assert_eq!(store.jobs("s").unwrap()[0].status, Status::Waiting);
    assert_eq!(store.waiting_jobs("s").unwrap(), [("a".to_owned(), 2)]);
    assert_eq!(store.prune_decisions("s").unwrap().len(), 1);
    // Not claimed as work; `b` is.
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "b");
    assert_eq!(store.claim("s", "me", lease).unwrap(), None);
    // Promoted once: running again from its checkpoint, its stop forgotten.
    let promoted = store.promote("a", "me", lease).unwrap().unwrap();
    assert_eq!((promoted.id.as_str(), promoted.attempts), ("a", 2));
    assert_eq!(store.promote("a", "other", lease).unwrap(), None);
    assert_eq!(store.prune_decision("a").unwrap(), None);
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((2, b"2".to_vec())));
    store.record_pruned_epoch("a", "me", &epoch(3), b"3", false, lease, Some(2), "behind again", true).unwrap();
    // `b` still runs: `a` waits on.
    assert!(!store.prune_waiting("s", "a", "the end").unwrap());
    store.finish("b", "me", Finish::Done).unwrap();
    assert!(store.prune_waiting("s", "a", "the end").unwrap());
    let decision = PruneRow { job_id: "a".into(), epoch: 3, rung: Some(2), reason: "the end".into() };
    assert_eq!(store.prune_decision("a").unwrap(), Some(decision));
    assert_eq!(store.jobs("s").unwrap()[0].status, Status::Pruned);
    assert_eq!(store.promote("a", "me", lease).unwrap(), None);
}
