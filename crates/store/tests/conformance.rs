//! One store conformance suite, run unchanged on both backends: each test is
//! a function of a fresh, empty database, called once on an SQLite file and
//! once on a PostgreSQL database of its own (created on the server that
//! `SWEEP_TEST_PG` names, dropped after). Without `SWEEP_TEST_PG` the
//! PostgreSQL half says it is skipped, on stderr past the test harness's
//! capture, and passes; under `CI=true` it fails instead (`.ci/run` starts a
//! server and sets it).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sweep_store::{
    latest_version, EpochRow, Error, Finish, Location, ManifestJson, NewJob, NewSweep, Status, Store, MANIFEST_PART,
};

const LEASE: Duration = Duration::from_secs(60);

/// A fresh, empty database, removed when dropped.
struct Fresh {
    location: Location,
    guard: Guard,
}

enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// The server's URL (`SWEEP_TEST_PG`, never printed: it may hold a
    /// password), the test's database and its URL.
    Pg {
        admin: String,
        name: String,
        url: String,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Pg { admin, name, .. } = self {
            if let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    Fresh { location: Location::Sqlite(dir.path().join("sweep.db")), guard: Guard::Dir(dir) }
}

/// A fresh PostgreSQL database, or `None` (with a visible message) when no
/// server is given; under `CI=true` a missing server fails the test.
fn postgres() -> Option<Fresh> {
    let Ok(url) = std::env::var("SWEEP_TEST_PG") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "SWEEP_TEST_PG is not set under CI=true: .ci/run starts a PostgreSQL server and sets it"
        );
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            // Past the harness's capture, so it shows without --nocapture.
            let _ = writeln!(std::io::stderr(), "skipped: PostgreSQL not available (set SWEEP_TEST_PG)");
        }
        return None;
    };
    let Ok(Location::Postgres(shown)) = Location::parse(&url) else {
        panic!("SWEEP_TEST_PG is not a postgres:// URL");
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("sweep_test_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| panic!("{shown}: {e}"));
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let db_url = swap_database(&url, &name);
    let location = Location::parse(&db_url).unwrap();
    Some(Fresh { location, guard: Guard::Pg { admin: url, name, url: db_url } })
}

impl Fresh {
    /// Runs SQL on the database past the store (to make it newer, or foreign).
    fn raw(&self, sqlite_sql: &str, postgres_sql: &str) {
        match &self.guard {
            Guard::Dir(_) => {
                let conn = rusqlite::Connection::open(self.location.as_path().unwrap()).unwrap();
                conn.execute_batch(sqlite_sql).unwrap();
            }
            Guard::Pg { url, .. } => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client.batch_execute(postgres_sql).unwrap();
            }
        }
    }
}

fn swap_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let base = &head[..head.rfind('/').unwrap()];
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Each test, once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { super::$name(super::sqlite()) } )*
        }
        mod on_postgres {
            $( #[test] fn $name() { if let Some(db) = super::postgres() { super::$name(db) } } )*
        }
    };
}

conformance!(
    registers_idempotently_and_reads_back,
    claims_in_order_and_leases_end,
    concurrent_claimers_never_share_a_job,
    an_expired_lease_makes_a_dead_workers_job_claimable,
    an_epoch_its_checkpoints_and_best_are_one_transaction,
    feature_runs_and_the_latest_pass,
    binding_keeps_the_first_key,
    restart_and_retry_failed,
    read_only_reads_and_refuses_writes,
    an_empty_database_reads_as_empty_read_only,
    a_newer_schema_is_refused,
    a_foreign_database_is_refused_untouched,
    data_version_changes_when_another_connection_commits,
    errors_name_the_database,
);

fn new_sweep(id: &str) -> NewSweep<'_> {
    NewSweep { id, name: "demo", spec_json: "{}", source: Some("name = 'demo'"), source_path: Some("/s.toml") }
}

fn job(id: &str) -> NewJob<'_> {
    NewJob { id, config_json: "{\"lr\":0.01}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 3 }
}

fn epoch(n: i64, valid_acc: f64) -> EpochRow {
    EpochRow {
        epoch: n,
        train_loss: 1.0 / n as f64,
        train_acc: 0.5,
        valid_loss: 1.25 / n as f64,
        valid_acc,
        lr: 0.01,
        seconds: 0.25,
    }
}

fn with_jobs(db: &Fresh, sweep: &str, jobs: &[&str]) -> Store {
    let mut store = Store::open(&db.location).unwrap();
    let jobs: Vec<NewJob<'_>> = jobs.iter().map(|id| job(id)).collect();
    store.register_sweep(&new_sweep(sweep), &jobs).unwrap();
    store
}

fn is_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    t.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn registers_idempotently_and_reads_back(db: Fresh) {
    let mut store = Store::open(&db.location).unwrap();
    assert_eq!(store.schema_version().unwrap(), latest_version());
    let first = store.register_sweep(&new_sweep("sweep-one"), &[job("job-a"), job("job-b")]).unwrap();
    assert!(first.new_sweep);
    assert_eq!((first.new_jobs, first.known_jobs), (2, 0));
    let again = store.register_sweep(&new_sweep("sweep-one"), &[job("job-a"), job("job-b"), job("job-c")]).unwrap();
    assert!(!again.new_sweep);
    assert_eq!((again.new_jobs, again.known_jobs), (1, 2));
    let row = store.find_sweep(Some("sweep-one")).unwrap();
    assert_eq!(store.find_sweep(Some("swee")).unwrap().id, row.id);
    assert_eq!(store.find_sweep(Some("demo")).unwrap().id, row.id);
    assert_eq!(store.find_sweep(None).unwrap().id, row.id);
    assert_eq!((row.name.as_str(), row.source.as_deref()), ("demo", Some("name = 'demo'")));
    assert!(is_timestamp(&row.created_at), "{}", row.created_at);
    assert_eq!(row.counts, [(Status::Pending, 3)]);
    let jobs = store.jobs("sweep-one").unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job-a", "job-b", "job-c"]);
    let a = &jobs[0];
    assert_eq!((a.batch_size, a.workers, a.lr, a.momentum, a.epochs), (16, 2, 0.01, 0.9, 3));
    assert_eq!((a.status, a.attempts, a.epochs_done, a.seconds), (Status::Pending, 0, 0, 0.0));
    assert_eq!(store.job("job-b").unwrap().unwrap().id, "job-b");
    assert!(store.job("nope").unwrap().is_none());
    assert_eq!(store.resolve_job("job-c").unwrap(), "job-c");
    assert!(matches!(store.resolve_job("job-"), Err(Error::NotFound(_))), "a prefix of several");
    // A second sweep sharing a job, later.
    std::thread::sleep(Duration::from_millis(5));
    store.register_sweep(&NewSweep { name: "other", ..new_sweep("sweep-two") }, &[job("job-a")]).unwrap();
    assert_eq!(store.sweeps_of_job("job-a").unwrap(), ["sweep-one", "sweep-two"]);
    let all: Vec<String> = store.sweeps().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(all, ["sweep-one", "sweep-two"]);
    assert_eq!(store.find_sweep(None).unwrap().id, "sweep-two");
    drop(store);
    // Opening again is a no-op.
    let store = Store::open(&db.location).unwrap();
    assert_eq!(store.jobs("sweep-one").unwrap().len(), 3);
}

fn claims_in_order_and_leases_end(db: Fresh) {
    let mut store = with_jobs(&db, "s", &["a", "b"]);
    let a = store.claim("s", "me", LEASE).unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.attempts, a.config_json.as_str()), ("a", 1, "{\"lr\":0.01}"));
    let b = store.claim("s", "you", LEASE).unwrap().unwrap();
    assert_eq!(b.id, "b");
    assert!(store.claim("s", "me", LEASE).unwrap().is_none(), "nothing left to claim");
    let mut leases = store.leases("s").unwrap();
    leases.sort();
    assert_eq!(leases, [("a".to_owned(), "me".to_owned()), ("b".to_owned(), "you".to_owned())]);
    store.renew("a", "me", LEASE).unwrap();
    assert!(matches!(store.renew("a", "you", LEASE), Err(Error::LeaseLost { .. })));
    assert!(matches!(store.finish("a", "you", Finish::Done), Err(Error::LeaseLost { .. })));
    store.finish("a", "me", Finish::Done).unwrap();
    store.finish("b", "you", Finish::Failed("boom")).unwrap();
    assert!(matches!(store.renew("a", "me", LEASE), Err(Error::LeaseLost { .. })), "a finished job holds no lease");
    let jobs = store.jobs("s").unwrap();
    assert_eq!(jobs[0].status, Status::Done);
    assert_eq!((jobs[1].status, jobs[1].error.as_deref()), (Status::Failed, Some("boom")));
    assert!(store.leases("s").unwrap().is_empty());
    let row = store.find_sweep(Some("s")).unwrap();
    assert_eq!(row.counts, [(Status::Done, 1), (Status::Failed, 1)]);
}

fn concurrent_claimers_never_share_a_job(db: Fresh) {
    let names: Vec<String> = (0..40).map(|i| format!("job-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    drop(with_jobs(&db, "s", &refs));
    let claimers = 6;
    let barrier = Arc::new(Barrier::new(claimers));
    let location = Arc::new(db.location.clone());
    let threads: Vec<_> = (0..claimers)
        .map(|t| {
            let (barrier, location) = (barrier.clone(), location.clone());
            std::thread::spawn(move || {
                let mut store = Store::open(&*location).unwrap();
                let owner = format!("claimer-{t}");
                barrier.wait();
                let mut got = Vec::new();
                while let Some(job) = store.claim("s", &owner, LEASE).unwrap() {
                    store.finish(&job.id, &owner, Finish::Done).unwrap();
                    got.push(job.id);
                }
                got
            })
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in threads {
        for id in t.join().unwrap() {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 40, "every job claimed");
    assert!(seen.values().all(|n| *n == 1), "no job claimed twice: {seen:?}");
    let store = Store::open(&db.location).unwrap();
    assert!(store.jobs("s").unwrap().iter().all(|j| j.status == Status::Done && j.attempts == 1));
}

fn an_expired_lease_makes_a_dead_workers_job_claimable(db: Fresh) {
    let mut store = with_jobs(&db, "s", &["a"]);
    let short = Duration::from_millis(1);
    assert_eq!(store.claim("s", "dead", short).unwrap().unwrap().id, "a");
    std::thread::sleep(Duration::from_millis(20));
    let mut other = Store::open(&db.location).unwrap();
    let again = other.claim("s", "alive", LEASE).unwrap().expect("the expired lease is claimable");
    assert_eq!((again.id.as_str(), again.attempts), ("a", 2));
    // The dead worker, back, has lost it: its epoch is not written.
    let lost = store.record_epoch("a", "dead", &epoch(1, 0.5), b"state", true, LEASE).unwrap_err();
    assert!(matches!(lost, Error::LeaseLost { .. }), "{lost:?}");
    assert!(matches!(store.renew("a", "dead", LEASE), Err(Error::LeaseLost { .. })));
    assert!(store.epochs("a").unwrap().is_empty());
    assert!(store.checkpoint("a", "last").unwrap().is_none());
    // A lease known dead is ended at once.
    assert!(other.expire_lease("a", "alive").unwrap());
    assert_eq!(other.claim("s", "next", LEASE).unwrap().unwrap().attempts, 3);
}

fn an_epoch_its_checkpoints_and_best_are_one_transaction(db: Fresh) {
    let mut store = with_jobs(&db, "s", &["a"]);
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1, 0.5), b"one", true, LEASE).unwrap();
    store.record_epoch("a", "me", &epoch(2, 0.4), b"two", false, LEASE).unwrap();
    // The same epoch again fails whole: no second row, no new state, no seconds added.
    assert!(store.record_epoch("a", "me", &epoch(2, 0.9), b"bad", true, LEASE).is_err());
    let epochs = store.epochs("a").unwrap();
    assert_eq!(epochs, [epoch(1, 0.5), epoch(2, 0.4)]);
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((2, b"two".to_vec())));
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((1, b"one".to_vec())));
    assert_eq!(store.checkpoint_sizes("a").unwrap(), [("best".to_owned(), 1, 3), ("last".to_owned(), 2, 3)]);
    let job = store.job("a").unwrap().unwrap();
    assert_eq!((job.best_valid_acc, job.best_epoch, job.epochs_done, job.seconds), (Some(0.5), Some(1), 2, 0.5));
    assert_eq!((job.final_train_acc, job.best_valid_loss, job.best_train_loss), (Some(0.5), Some(0.625), Some(0.5)));
    // Binary state comes back byte for byte.
    let bytes: Vec<u8> = (0..=255).collect();
    store.record_epoch("a", "me", &epoch(3, 0.7), &bytes, true, LEASE).unwrap();
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((3, bytes.clone())));
    // A best taken at `last`'s epoch is recorded once (schema 8) and keeps
    // its bytes when `last` moves on.
    store.record_epoch("a", "me", &epoch(4, 0.6), b"four", false, LEASE).unwrap();
    assert_eq!(store.checkpoint("a", "best").unwrap(), Some((3, bytes)));
    assert_eq!(store.checkpoint("a", "last").unwrap(), Some((4, b"four".to_vec())));
    assert_eq!(store.checkpoint_sizes("a").unwrap(), [("best".to_owned(), 3, 256), ("last".to_owned(), 4, 4)]);
    store.finish("a", "me", Finish::Done).unwrap();
}

fn feature_runs_and_the_latest_pass(db: Fresh) {
    let store = with_jobs(&db, "s", &["a"]);
    let first = store.record_feature_run("s", "key1", false, 12, Some(1.5)).unwrap();
    let second = store.record_feature_run("s", "key1", true, 12, None).unwrap();
    assert!(second > first);
    store.set_features("s", "key1", true, "{\"train\":9}").unwrap();
    let runs = store.feature_runs("s").unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].reused, runs[0].images, runs[0].seconds), (false, 12, Some(1.5)));
    assert_eq!((runs[1].reused, runs[1].seconds), (true, None));
    assert!(is_timestamp(&runs[0].recorded_at), "{}", runs[0].recorded_at);
    assert_eq!(store.feature_pass("key1").unwrap().unwrap().id, first, "the pass, not the cache hit");
    assert!(store.feature_pass("key2").unwrap().is_none());
    let row = store.find_sweep(Some("s")).unwrap();
    assert_eq!((row.features_key.as_deref(), row.features_reused), (Some("key1"), Some(true)));
    assert_eq!(row.split_json.as_deref(), Some("{\"train\":9}"));
    assert!(store.record_feature_run("no-such-sweep", "k", false, 1, None).is_err(), "the sweep must exist");
}

fn binding_keeps_the_first_key(db: Fresh) {
    let store = with_jobs(&db, "s", &["a", "b"]);
    assert!(store.has_sweep("s").unwrap());
    assert!(!store.has_sweep("t").unwrap());
    assert_eq!(store.sweep_data_key("s").unwrap(), None);
    store.bind_data("s", &["a"], "k1", &Positions("{\"images\":1}", MANIFEST_PART + 1)).unwrap();
    store.bind_data("s", &["a", "b"], "k2", &Positions("{\"images\":2}", 1)).unwrap();
    assert_eq!(store.sweep_data_key("s").unwrap().as_deref(), Some("k1"));
    let keys = store.job_data_keys(&["a", "b", "c"]).unwrap();
    assert_eq!(keys, HashMap::from([("a".to_owned(), "k1".to_owned()), ("b".to_owned(), "k2".to_owned())]));
    assert_eq!(store.data_manifest("k1").unwrap().as_deref(), Some("{\"images\":1}"));
    assert_eq!(store.data_manifest("k3").unwrap(), None);
    // Its images in parts, in order.
    let part = |key, i| {
        store.data_manifest_part(key, i).unwrap().map(|json| serde_json::from_str::<Vec<usize>>(&json).unwrap())
    };
    assert_eq!(part("k1", 0), Some((0..MANIFEST_PART).collect()));
    assert_eq!(part("k1", 1), Some(vec![MANIFEST_PART]));
    assert_eq!((part("k1", 2), part("k2", 0), part("k2", 1)), (None, Some(vec![0]), None));
}

/// A manifest whose images are their positions.
struct Positions(&'static str, usize);

impl ManifestJson for Positions {
    fn header(&self) -> String {
        self.0.to_owned()
    }

    fn images(&self) -> usize {
        self.1
    }

    fn items(&self, range: std::ops::Range<usize>) -> String {
        serde_json::to_string(&range.collect::<Vec<_>>()).unwrap()
    }
}

fn restart_and_retry_failed(db: Fresh) {
    let mut store = with_jobs(&db, "s", &["a", "b"]);
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1, 0.5), b"one", true, LEASE).unwrap();
    assert_eq!(store.restart("a").unwrap(), None, "held by a runner");
    store.finish("a", "me", Finish::Interrupted).unwrap();
    assert_eq!(store.restart("a").unwrap(), Some(1));
    let a = store.job("a").unwrap().unwrap();
    assert_eq!((a.status, a.epochs_done, a.best_valid_acc, a.seconds), (Status::Pending, 0, None, 0.0));
    assert!(store.checkpoint("a", "last").unwrap().is_none());
    assert!(store.restart("nope").is_err());
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.finish("a", "me", Finish::Failed("x")).unwrap();
    assert_eq!(store.retry_failed("s").unwrap(), 1);
    assert_eq!(store.job("a").unwrap().unwrap().status, Status::Interrupted);
}

fn read_only_reads_and_refuses_writes(db: Fresh) {
    let mut store = with_jobs(&db, "s", &["a"]);
    store.claim("s", "me", LEASE).unwrap().unwrap();
    store.record_epoch("a", "me", &epoch(1, 0.5), b"one", true, LEASE).unwrap();
    let mut reader = Store::open_read_only(&db.location).unwrap();
    assert_eq!(reader.epochs("a").unwrap(), [epoch(1, 0.5)]);
    assert_eq!(reader.find_sweep(None).unwrap().id, "s");
    let refused = [
        reader.register_sweep(&new_sweep("t"), &[job("b")]).map(drop),
        reader.claim("s", "other", LEASE).map(drop),
        reader.renew("a", "me", LEASE),
        reader.record_epoch("a", "me", &epoch(2, 0.5), b"two", false, LEASE),
        reader.finish("a", "me", Finish::Done),
        reader.set_features("s", "k", false, "{}"),
    ];
    for r in refused {
        assert!(matches!(&r, Err(Error::ReadOnly { path }) if *path == db.location), "{r:?}");
    }
    assert_eq!(store.epochs("a").unwrap().len(), 1);
}

fn an_empty_database_reads_as_empty_read_only(db: Fresh) {
    let reader = Store::open_read_only(&db.location).unwrap();
    assert!(reader.sweeps().unwrap().is_empty());
    assert!(matches!(reader.find_sweep(None), Err(Error::NotFound(_))));
    drop(reader);
    // Nothing was created: opening for writing still starts from nothing.
    let store = Store::open(&db.location).unwrap();
    assert!(store.sweeps().unwrap().is_empty());
}

fn a_newer_schema_is_refused(db: Fresh) {
    drop(with_jobs(&db, "s", &["a"]));
    let newer = latest_version() + 1;
    db.raw(&format!("PRAGMA user_version = {newer}"), &format!("UPDATE sweep_schema SET version = {newer}"));
    for err in [Store::open(&db.location).unwrap_err(), Store::open_read_only(&db.location).unwrap_err()] {
        assert!(matches!(err, Error::TooNew { found, .. } if found == newer), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: written by a newer sweep (schema version {newer}; this sweep knows up to {}): upgrade sweep",
                db.location,
                latest_version()
            )
        );
    }
}

fn a_foreign_database_is_refused_untouched(db: Fresh) {
    db.raw(
        "CREATE TABLE notes (x INTEGER); INSERT INTO notes VALUES (1);",
        "CREATE TABLE notes (x BIGINT); INSERT INTO notes VALUES (1);",
    );
    for err in [Store::open(&db.location).unwrap_err(), Store::open_read_only(&db.location).unwrap_err()] {
        assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("{}: not a sweep database", db.location)), "{err}");
    }
    // Untouched: no sweep table appeared.
    db.raw("SELECT x FROM notes", "SELECT x FROM notes");
}

fn data_version_changes_when_another_connection_commits(db: Fresh) {
    let mut writer = with_jobs(&db, "s", &["a"]);
    let reader = Store::open_read_only(&db.location).unwrap();
    let before = reader.data_version().unwrap();
    if !db.location.is_postgres() {
        // SQLite's counts this file's commits only; PostgreSQL's follows the
        // whole server (other tests' databases commit beside this one): it
        // changes more often than needed, never less.
        assert_eq!(reader.data_version().unwrap(), before, "nothing committed");
    }
    writer.claim("s", "me", LEASE).unwrap().unwrap();
    assert_ne!(reader.data_version().unwrap(), before, "another connection committed");
}

fn errors_name_the_database(db: Fresh) {
    let store = Store::open(&db.location).unwrap();
    let err = store.find_sweep(Some("nope")).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: no sweep named or with id `nope`", db.location)), "{err}");
    let err = store.record_feature_run("nope", "k", false, 1, None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: ", db.location)), "{err}");
}
