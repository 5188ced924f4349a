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
