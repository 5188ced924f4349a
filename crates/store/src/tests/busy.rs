//! Issue 16: a write blocked by another connection's lock for longer than
//! SQLite's busy timeout waits and succeeds, within the store's retry budget;
//! past it, it fails as `Error::Busy` having written nothing.

use std::sync::mpsc;

use super::*;
use crate::busy::Patience;

/// Holds the write lock of `path` from another connection for `hold`, from
/// the moment this returns.
fn hold_write_lock(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let (locked, is_locked) = mpsc::channel();
    let path = path.to_owned();
    let holder = std::thread::spawn(move || {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    holder
}

/// A store of `path` with sweep `s` of jobs a and b, job a claimed by `me`,
/// and SQLite's busy timeout cut to 20 ms.
fn claimed_store(path: &Path, retry_for: Duration) -> Store {
    let mut store = Store::open(path).unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b")]).unwrap();
    store.claim("s", "me", Duration::from_secs(600)).unwrap().unwrap();
    store.set_patience(Patience { busy_timeout: Duration::from_millis(20), retry_for }).unwrap();
    store
}

#[test]
fn writes_blocked_past_the_busy_timeout_wait_and_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = claimed_store(&path, Duration::from_secs(30));
    let lease = Duration::from_secs(600);
    let hold = Duration::from_millis(300);
    type Write = Box<dyn Fn(&mut Store) -> Result<(), Error>>;
    let writes: Vec<(&str, Write)> = vec![
        ("register", Box::new(|s| s.register_sweep(&sweep("s2"), &[job("c")]).map(drop))),
        ("claim", Box::new(move |s| s.claim("s", "other", lease).map(|c| assert_eq!(c.unwrap().id, "b")))),
        ("renew", Box::new(move |s| s.renew("a", "me", lease))),
        ("record_epoch", Box::new(move |s| s.record_epoch("a", "me", &epoch(1), b"state", true, lease))),
        ("finish", Box::new(|s| s.finish("a", "me", Finish::Done))),
    ];
    for (name, write) in writes {
        let holder = hold_write_lock(&path, hold);
        let start = std::time::Instant::now();
        write(&mut store).unwrap_or_else(|e| panic!("{name}: {e}"));
        // It waited for the lock: 15 times SQLite's busy timeout.
        assert!(start.elapsed() >= hold - Duration::from_millis(50), "{name}: {:?}", start.elapsed());
        holder.join().unwrap();
    }
    let jobs = store.jobs("s").unwrap();
    assert_eq!((jobs[0].status, jobs[0].epochs_done, jobs[1].status), (Status::Done, 1, Status::Running));
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((1, b"state".to_vec())));
    assert_eq!(store.find_sweep(Some("s2")).unwrap().counts, [(Status::Pending, 1)]);
}

#[test]
fn a_write_blocked_past_the_retry_budget_is_busy_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = claimed_store(&path, Duration::from_millis(300));
    let lease = Duration::from_secs(600);
    let holder = hold_write_lock(&path, Duration::from_secs(2));
    let err = store.record_epoch("a", "me", &epoch(1), b"state", true, lease).unwrap_err();
    let Error::Busy { waited, .. } = &err else { panic!("{err:?}") };
    assert!(*waited >= Duration::from_millis(300) && *waited < Duration::from_secs(2), "{waited:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}: the database is locked by another connection", path.display())), "{msg}");
    holder.join().unwrap();
    assert!(store.epochs("a").unwrap().is_empty());
    assert_eq!(store.checkpoint("a", "last").unwrap(), None);
    // Once the lock is gone, the same write goes through.
    store.record_epoch("a", "me", &epoch(1), b"state", true, lease).unwrap();
    assert_eq!(store.epochs("a").unwrap().len(), 1);
}
