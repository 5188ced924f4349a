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
        store.sqlite().execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
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
        store.sqlite().execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
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
    // SQLite says "integrity check failed: …" or, when the page is one the
    // check itself must read (which one it is depends on the schema's
    // layout), "database disk image is malformed": refused either way.
    let expected = format!("{}: the database is damaged: ", damaged.display());
    assert!(msg.starts_with(&expected), "{msg}");
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);
    assert!(!dir.path().join("damaged.db-wal").exists());
    assert!(!dir.path().join("damaged.db-journal").exists());
}

/// Issue 16: while another connection writes (many small transactions, a
/// checkpoint every few of them), opening the database, for writing or for
/// reading only, never calls it damaged.
/// A checkpoint writes page 1, with the new page count, before the pages it
/// promises, so the main file is briefly shorter than its header says.
#[test]
fn opening_beside_a_busy_writer_never_calls_the_database_damaged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.db");
    Store::open(&path).unwrap().register_sweep(&sweep("s"), &[job("a")]).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut store = Store::open(&path).unwrap();
            store.sqlite().pragma_update(None, "wal_autocheckpoint", 4).unwrap();
            let mut transactions = 0;
            while !stop.load(Ordering::Relaxed) {
                // Every transaction grows the file, so every checkpoint moves its page count.
                let ids: Vec<String> = (0..8).map(|i| format!("w{transactions}-{i}-{}", "x".repeat(300))).collect();
                let jobs: Vec<NewJob<'_>> = ids.iter().map(|id| job(id)).collect();
                store.register_sweep(&sweep(&format!("s{transactions}")), &jobs).unwrap();
                transactions += 1;
            }
            transactions
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (mut opens, mut errors) = (0, Vec::new());
    while std::time::Instant::now() < deadline {
        // As `sweep run` opens it, then as `sweep status` does.
        let opened = match opens % 2 {
            0 => Store::open(&path),
            _ => Store::open_read_only(&path),
        };
        if let Err(e) = opened.and_then(|store| store.sweeps()) {
            errors.push(e.to_string());
        }
        opens += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} of {opens} opens failed beside {transactions} transactions: {errors:#?}",
        errors.len()
    );
    assert!(transactions >= 20 && opens >= 5, "{transactions} transactions, {opens} opens");
}

/// Issue 16: a database whose WAL holds pages that its main file lacks, as a
/// checkpoint cut short by a full disk leaves it (page 1 already carries the
/// new page count; the pages it promises are only in the WAL), and as a killed
/// process leaves it (a `-wal` without its `-shm`, to be recovered): SQLite
/// reads it whole, so opening must too.
#[test]
fn a_database_whose_wal_holds_pages_the_main_file_lacks_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let left = dir.path().join("left.db");
    let ids: Vec<String> = (0..400).map(|i| format!("job-{i:04}-{}", "x".repeat(100))).collect();
    let pages: u32 = {
        let mut store = Store::open(&live).unwrap();
        store.sqlite().pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        store.register_sweep(&sweep("small"), &[job("a")]).unwrap();
        store.sqlite().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        store.register_sweep(&sweep("big"), &ids.iter().map(|id| job(id)).collect::<Vec<_>>()).unwrap();
        // Copied while the connection is open: the WAL is not folded in.
        std::fs::copy(&live, &left).unwrap();
        std::fs::copy(dir.path().join("live.db-wal"), dir.path().join("left.db-wal")).unwrap();
        store.sqlite().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
    };
    let mut main = std::fs::read(&left).unwrap();
    main[28..32].copy_from_slice(&pages.to_be_bytes());
    std::fs::write(&left, &main).unwrap();
    assert!((main.len() as u64) < u64::from(pages) * 4096, "{} bytes, {pages} pages", main.len());
    assert!(std::fs::metadata(dir.path().join("left.db-wal")).unwrap().len() > 0);

    let store = Store::open(&left).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.jobs("big").unwrap().len(), 400);
    assert_eq!(store.jobs("small").unwrap().len(), 1);
    let check: String = store.sqlite().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

/// The other side of issue 16: a database in WAL mode cut short is still
/// refused untouched when no WAL holds the pages it lacks, be there no `-wal`
/// file or an empty one.
#[test]
fn a_wal_database_cut_short_without_pages_in_its_wal_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    {
        let mut store = Store::open(&good).unwrap();
        let ids: Vec<String> = (0..100).map(|i| format!("job-{i:04}-{}", "x".repeat(100))).collect();
        store.register_sweep(&sweep("s"), &ids.iter().map(|id| job(id)).collect::<Vec<_>>()).unwrap();
    }
    assert!(!dir.path().join("good.db-wal").exists(), "closing folds the WAL in and removes it");
    let bytes = std::fs::read(&good).unwrap();
    assert_eq!(bytes[18..20], [2, 2], "a WAL database");
    for (name, wal) in [("cut.db", None), ("cut-empty-wal.db", Some(""))] {
        let cut = dir.path().join(name);
        let kept = &bytes[..bytes.len() - 2 * 4096];
        std::fs::write(&cut, kept).unwrap();
        if let Some(wal) = wal {
            std::fs::write(dir.path().join(format!("{name}-wal")), wal).unwrap();
        }
        let err = Store::open(&cut).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(&format!("{name}: the database is damaged: truncated: ")), "{err}");
        assert_eq!(std::fs::read(&cut).unwrap(), kept, "{name}");
    }
}
