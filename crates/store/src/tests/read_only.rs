//! Issue 16: reading a database without writing to it (`sweep status`,
//! `table`, `export`), also where SQLite cannot create its `-shm` file.

use super::migrations::{assert_old_rows_kept, create_at_version, user_version};
use super::*;
use crate::read_only::{folder_accepts_files, read_access, Access, Beside};

const LEASE: Duration = Duration::from_secs(600);

/// A database of one sweep: job a done (two epochs, checkpoints, a feature
/// pass), job b failed, job c running; closed, so its WAL is folded in.
fn finished(path: &Path) {
    let mut store = Store::open(path).unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b"), job("c")]).unwrap();
    store.record_feature_run("s", "key", false, 48, Some(1.5)).unwrap();
    for (id, how) in [("a", Some(Finish::Done)), ("b", Some(Finish::Failed("boom"))), ("c", None)] {
        let claimed = store.claim("s", "me", LEASE).unwrap().unwrap();
        assert_eq!(claimed.id, id);
        store.record_epoch(id, "me", &epoch(1), b"one", true, LEASE).unwrap();
        store.record_epoch(id, "me", &epoch(2), b"two", false, LEASE).unwrap();
        if let Some(how) = how {
            store.finish(id, "me", how).unwrap();
        }
    }
}

/// Every read method answers as on a writable store of the same file.
fn assert_reads(store: &Store) {
    assert_eq!(store.schema_version().unwrap(), latest_version());
    let row = store.find_sweep(None).unwrap();
    assert_eq!(row.id, "s");
    assert_eq!(row.counts, [(Status::Running, 1), (Status::Done, 1), (Status::Failed, 1)]);
    assert_eq!(store.sweeps().unwrap(), [row]);
    let jobs = store.jobs("s").unwrap();
    let summary: Vec<_> = jobs.iter().map(|j| (j.id.as_str(), j.status, j.epochs_done, j.best_epoch)).collect();
    assert_eq!(
        summary,
        [("a", Status::Done, 2, Some(1)), ("b", Status::Failed, 2, Some(1)), ("c", Status::Running, 2, Some(1))]
    );
    assert_eq!(store.resolve_job("a").unwrap(), "a");
    assert_eq!(store.epochs("a").unwrap().len(), 2);
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((1, b"one".to_vec())));
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((2, b"two".to_vec())));
    assert_eq!(store.feature_runs("s").unwrap().len(), 1);
    assert_eq!(store.leases("s").unwrap(), [("c".to_owned(), "me".to_owned())]);
}

/// Every write method is refused, naming the file.
fn assert_writes_refused(store: &mut Store) {
    let path = store.location().as_path().unwrap().to_owned();
    let results: Vec<(&str, Result<(), Error>)> = vec![
        ("register_sweep", store.register_sweep(&sweep("t"), &[job("d")]).map(drop)),
        ("claim", store.claim("s", "other", LEASE).map(drop)),
        ("renew", store.renew("c", "me", LEASE)),
        ("record_epoch", store.record_epoch("c", "me", &epoch(3), b"three", false, LEASE)),
        ("finish", store.finish("c", "me", Finish::Done)),
        ("expire_lease", store.expire_lease("c", "me").map(drop)),
        ("retry_failed", store.retry_failed("s").map(drop)),
        ("set_features", store.set_features("s", "k", true, "{}")),
        ("record_feature_run", store.record_feature_run("s", "k", true, 1, None).map(drop)),
    ];
    for (name, result) in results {
        let err = result.unwrap_err();
        assert!(matches!(&err, Error::ReadOnly { path: p } if *p == Location::from(&path)), "{name}: {err:?}");
        assert_eq!(err.to_string(), format!("{}: opened for reading only, so it cannot be written", path.display()));
    }
}

/// The files of `dir`: name, length and a checksum of their bytes.
fn snapshot(dir: &Path) -> Vec<(String, usize, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let sum =
                bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes.len(), sum)
        })
        .collect();
    files.sort();
    files
}

/// A snapshot without what a read-only SQLite connection leaves beside a WAL
/// database: the `-wal` it needs (empty: nothing was written) and the `-shm`
/// index; it may not checkpoint, so it cannot remove them. The next writer does.
fn but_for_sqlite_files(mut files: Vec<(String, usize, u64)>) -> Vec<(String, usize, u64)> {
    let left_by_sqlite = |name: &str, len: usize| name.ends_with("-shm") || (name.ends_with("-wal") && len == 0);
    files.retain(|(name, len, _)| !left_by_sqlite(name, *len));
    files
}

#[test]
fn a_database_reads_read_only_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    finished(&path);
    let before = snapshot(dir.path());
    let mut store = Store::open_read_only(&path).unwrap();
    assert_reads(&store);
    assert_writes_refused(&mut store);
    assert_reads(&store);
    drop(store);
    assert_eq!(but_for_sqlite_files(snapshot(dir.path())), before);
}

/// Where the folder accepts no new file, SQLite could not create the `-shm` it
/// reads a WAL database through: the file is read `immutable`, by a URI that
/// keeps an awkward path intact.
#[test]
fn in_a_folder_that_accepts_no_file_a_database_reads_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("runs 50% ?#&=;é");
    std::fs::create_dir(&folder).unwrap();
    let path = folder.join("s v2.db");
    finished(&path);
    let before = snapshot(&folder);
    let mut store = Store::open_read_only_with(&path, |_| false).unwrap();
    assert_reads(&store);
    assert_writes_refused(&mut store);
    // No -wal or -shm while it is open: SQLite reads the main file alone.
    assert_eq!(snapshot(&folder), before);
    drop(store);
    assert_eq!(snapshot(&folder), before);
}

/// A folder made read-only for real. As root (the tests' usual user),
/// permissions do not stop file creation, so it reads as any folder; as
/// anyone else, the probe finds the folder closed and the file reads
/// immutable.
#[test]
fn in_a_read_only_folder_a_database_reads() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let path = folder.join("s.db");
    finished(&path);
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = snapshot(&folder);
    let store = Store::open_read_only(&path);
    let accepts = folder_accepts_files(&path);
    let after = snapshot(&folder);
    // What opening for writing does there (before issue 16, every command).
    let writable = Store::open(&path).map(drop);
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_reads(&store.unwrap_or_else(|e| panic!("folder accepts files: {accepts}: {e}")));
    if accepts {
        assert_eq!(but_for_sqlite_files(after), before, "the probe left nothing behind");
    } else {
        assert_eq!(after, before, "read immutable: no -wal, no -shm, no probe left");
        let err = writable.unwrap_err().to_string();
        assert!(err.contains("s.db: cannot open: "), "{err}");
        assert!(err.ends_with(" (its folder accepts no new file, and writing needs s.db-wal beside it)"), "{err}");
    }
}

#[test]
fn how_a_database_is_read_depends_on_its_folder_and_what_lies_beside_it() {
    let path = Path::new("/data/s.db");
    let beside = |wal_len, shm| Beside { wal_len, shm };
    // A folder that takes files: as any reader, whatever lies beside it.
    for b in [beside(0, false), beside(0, true), beside(4096, false), beside(4096, true)] {
        assert_eq!(read_access(path, true, b).unwrap(), Access::Shared, "{b:?}");
    }
    // One that does not: immutable when no WAL holds writes ...
    assert_eq!(read_access(path, false, beside(0, false)).unwrap(), Access::Immutable);
    assert_eq!(read_access(path, false, beside(0, true)).unwrap(), Access::Immutable);
    // ... through the existing -shm when one does ...
    assert_eq!(read_access(path, false, beside(4096, true)).unwrap(), Access::Shared);
    // ... and not at all without one.
    let err = read_access(path, false, beside(4096, false)).unwrap_err().to_string();
    assert!(err.starts_with("/data/s.db: cannot open: /data/s.db-wal holds writes not yet in the database"), "{err}");
}

/// A WAL holding writes (its writer still open), copied into a folder that
/// accepts no file: refused without its `-shm`, read whole with it.
#[test]
fn a_wal_holding_writes_reads_through_its_shm_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("s.db");
    let mut writer = Store::open(&live).unwrap();
    writer.sqlite().pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    writer.register_sweep(&sweep("s"), &[job("a")]).unwrap();
    writer.sqlite().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    writer.register_sweep(&sweep("late"), &[job("b")]).unwrap();
    std::fs::copy(&live, &path).unwrap();
    std::fs::copy(dir.path().join("live.db-wal"), copy.path().join("s.db-wal")).unwrap();

    let err = Store::open_read_only_with(&path, |_| false).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("s.db-wal holds writes not yet in the database"), "{err}");

    std::fs::copy(dir.path().join("live.db-shm"), copy.path().join("s.db-shm")).unwrap();
    let store = Store::open_read_only_with(&path, |_| false).unwrap();
    assert_eq!(store.jobs("late").unwrap().len(), 1);
    drop(writer);
}

#[test]
fn a_missing_or_empty_file_reads_as_an_empty_database_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for path in [&missing, &empty] {
        let mut store = Store::open_read_only(path).unwrap();
        assert!(store.sweeps().unwrap().is_empty());
        let err = store.find_sweep(None).unwrap_err().to_string();
        assert_eq!(err, format!("{}: no sweeps yet (submit one with `sweep run FILE`)", path.display()));
        assert!(matches!(store.register_sweep(&sweep("s"), &[job("a")]), Err(Error::ReadOnly { .. })));
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read(&empty).unwrap(), b"");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn an_older_schema_reads_as_it_is_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    create_at_version(&path, 1);
    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    assert_old_rows_kept(&store);
    assert!(store.feature_runs("old").unwrap().is_empty());
    drop(store);
    assert_eq!(user_version(&path), 1);
}

#[test]
fn foreign_damaged_and_newer_files_are_refused_read_only_too() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "hello, this is not a database at all, not even close").unwrap();
    assert!(matches!(Store::open_read_only(&text), Err(Error::Foreign { .. })));

    let newer = dir.path().join("newer.db");
    finished(&newer);
    Connection::open(&newer).unwrap().pragma_update(None, "user_version", latest_version() + 1).unwrap();
    let err = Store::open_read_only(&newer).unwrap_err();
    assert!(matches!(err, Error::TooNew { .. }), "{err:?}");

    let cut = dir.path().join("cut.db");
    let bytes = std::fs::read(&newer).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let err = Store::open_read_only(&cut).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
}
