//! Writes: registering sweeps and recording feature passes.

use super::*;

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

/// Issue 16: an SQLite error on an open database names the file, as the
/// errors on opening it do.
#[test]
fn sqlite_errors_name_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    store.register_sweep(&sweep("s"), &[job("a")]).unwrap();
    store.claim("s", "me", Duration::from_secs(60)).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1), b"x", false, Duration::from_secs(60)).unwrap();
    let twice = store.record_epoch("a", "me", &epoch(1), b"x", false, Duration::from_secs(60)).unwrap_err();
    let unknown = store.record_feature_run("nope", "k", false, 1, None).unwrap_err();
    for (err, what) in [(twice, "UNIQUE constraint failed: epochs.job_id, epochs.epoch"), (unknown, "FOREIGN KEY")] {
        assert!(matches!(&err, Error::Sqlite { path: p, .. } if p.as_path() == Some(path.as_path())), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}: sqlite: {what}", path.display())), "{msg}");
    }
}

/// Issue 16: a full disk is its own error, distinct from every other SQLite
/// failure; the epoch is not written (nor its state), and the same write
/// succeeds once there is room. SQLite's `max_page_count` returns the
/// `SQLITE_FULL` a full disk returns.
#[test]
fn a_full_disk_is_its_own_error_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = Store::open(&path).unwrap();
    store.register_sweep(&sweep("s"), &[job("a")]).unwrap();
    store.claim("s", "me", Duration::from_secs(60)).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1), b"one", true, Duration::from_secs(60)).unwrap();
    let pages: i64 = store.sqlite().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    store.sqlite().pragma_update(None, "max_page_count", pages).unwrap();
    let big = vec![7u8; 64 * 1024];
    let err = store.record_epoch("a", "me", &epoch(2), &big, true, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(&err, Error::Full { path: p } if *p == Location::from(&path)), "{err:?}");
    assert_eq!(err.to_string(), format!("{}: the disk is full", path.display()));
    assert_eq!(store.epochs("a").unwrap().len(), 1);
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((1, b"one".to_vec())));
    store.sqlite().pragma_update(None, "max_page_count", 1_000_000).unwrap();
    store.record_epoch("a", "me", &epoch(2), &big, true, Duration::from_secs(60)).unwrap();
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((2, big)));
}
