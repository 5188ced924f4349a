//! Opening: creating, reopening, and refusing foreign, damaged or newer files untouched.

use super::*;

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
