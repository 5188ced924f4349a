//! Leases: claims, records under a lease, expiry, and many processes claiming at once.

use super::*;

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
                .args([
                    "--exact",
                    "tests::lease::claim_loop_drains_a_sweep_once_each",
                    "--nocapture",
                    "--test-threads=1",
                ])
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

/// Issue 16: `sweep resume --restart JOB`. A job starts again from epoch 0,
/// its epochs and checkpoints gone in one transaction; never under a runner.
#[test]
fn restart_deletes_a_jobs_epochs_and_checkpoints_unless_a_runner_holds_it() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s"), &[job("a"), job("b")]).unwrap();
    let lease = Duration::from_secs(30);
    store.claim("s", "me", lease).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1), b"one", true, lease).unwrap();
    store.record_epoch("a", "me", &epoch(2), b"two", false, lease).unwrap();
    assert_eq!(store.restart("a").unwrap(), None, "running under a lease");
    assert_eq!(store.epochs("a").unwrap().len(), 2);
    store.finish("a", "me", Finish::Failed("boom")).unwrap();
    assert_eq!(store.restart("a").unwrap(), Some(2));
    assert_eq!(store.epochs("a").unwrap(), []);
    assert_eq!((store.checkpoint("a", "last").unwrap(), store.checkpoint("a", "best").unwrap()), (None, None));
    let a = store.jobs("s").unwrap().into_iter().find(|j| j.id == "a").unwrap();
    assert_eq!((a.status, a.error, a.best_epoch), (Status::Pending, None, None));
    assert_eq!(store.claim("s", "me", lease).unwrap().unwrap().id, "a");
}

/// Issue 12: a job that comes after others is passed over while any of them
/// is still to run or running, whatever its place in the sweep.
#[test]
fn a_job_is_claimed_only_after_the_jobs_it_comes_after() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .register_sweep(
            &NewSweep { id: "s", name: "n", spec_json: "{}", source: None, source_path: None },
            &[job("long"), job("other"), job("short")],
        )
        .unwrap();
    let lease = Duration::from_secs(30);
    let after = HashMap::from([("long".to_owned(), vec!["short".to_owned()])]);
    let first = store.claim_after("s", "me", lease, &after).unwrap().unwrap();
    assert_eq!(first.id, "other");
    let second = store.claim_after("s", "me", lease, &after).unwrap().unwrap();
    assert_eq!(second.id, "short");
    // `short` is running: `long` still waits.
    assert_eq!(store.claim_after("s", "me", lease, &after).unwrap(), None);
    assert_eq!(store.claimable("s").unwrap(), 1);
    store.finish("short", "me", Finish::Interrupted).unwrap();
    assert_eq!(store.claim_after("s", "me", lease, &after).unwrap().unwrap().id, "short");
    store.finish("short", "me", Finish::Failed("no")).unwrap();
    // Failed is an end too: the job that came after it is free.
    let last = store.claim_after("s", "me", lease, &after).unwrap().unwrap();
    assert_eq!((last.id.as_str(), last.attempts), ("long", 1));
}

/// Fused heads' epochs in one transaction: each as `record_epoch` (or, with
/// a stop, `record_pruned_epoch`) records it, a job whose lease is lost
/// skipped without failing the others.
#[test]
fn a_group_of_epochs_records_each_held_one() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .register_sweep(
            &NewSweep { id: "s", name: "n", spec_json: "{}", source: None, source_path: None },
            &[job("a"), job("b"), job("c")],
        )
        .unwrap();
    let lease = Duration::from_secs(30);
    for _ in 0..3 {
        store.claim("s", "me", lease).unwrap().unwrap();
    }
    let record = |id: &str, owner: &str, stop: Option<(Option<i64>, String, bool)>| EpochRecord {
        job_id: id.to_owned(),
        owner: owner.to_owned(),
        row: epoch(1),
        state: id.as_bytes().to_vec(),
        is_best: true,
        lease,
        stop,
    };
    let held = store
        .record_epochs(&[
            record("a", "me", None),
            record("b", "other", None),
            record("c", "me", Some((Some(0), "behind".to_owned(), false))),
        ])
        .unwrap();
    assert_eq!(held, [true, false, true]);
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((1, b"a".to_vec())));
    assert_eq!(store.epochs("b").unwrap().len(), 0);
    assert_eq!(store.checkpoint("c", "last").unwrap(), Some((1, b"c".to_vec())));
    let status: Vec<Status> = store.jobs("s").unwrap().iter().map(|r| r.status).collect();
    assert_eq!(status, [Status::Running, Status::Running, Status::Pruned]);
}
