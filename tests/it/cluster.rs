//! Issue #13: `sweep submit`, `sweep worker`, and `sweep slurm` on a real
//! single-node Slurm (started by `.ci/run`; skipped with a message where it
//! is absent, never under `CI=true`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::resume::{
    assert_complete, is_epoch_line, job_of, reference, results, results_of, signalled, Rng, Runner, LONG, PATIENCE,
};
use crate::{json, stderr, stdout, Env};

fn submit(env: &Env, file: &str) -> String {
    let out = env.sweep(&["submit", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 16, "one sweep id on stdout: {id:?}");
    id
}

fn statuses(env: &Env) -> BTreeMap<String, String> {
    let store = sweep_store::Store::open_read_only(env.path("sweep.db")).unwrap();
    let sweep = store.find_sweep(None).unwrap();
    store.jobs(&sweep.id).unwrap().into_iter().map(|j| (j.id, j.status.as_str().to_owned())).collect()
}

#[test]
fn submit_registers_without_running_and_two_workers_finish_it_like_one_run() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let file_arg = file.to_str().unwrap();
    let id = submit(&env, file_arg);
    // Registered, nothing computed or trained.
    assert!(statuses(&env).values().all(|s| s == "pending"), "{:?}", statuses(&env));
    assert!(!env.path("sweep-cache").exists() || std::fs::read_dir(env.path("sweep-cache")).unwrap().next().is_none());
    // Submitting again registers nothing new.
    assert_eq!(submit(&env, file_arg), id);

    let workers: Vec<Runner> = (0..2).map(|_| Runner::spawn(&env, &["worker", "--sweep", &id])).collect();
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    for worker in workers {
        let (status, _, lines) = worker.finish();
        let text = lines.join("\n");
        assert!(status.success(), "{status}:\n{text}");
        assert!(lines.iter().any(|l| l.starts_with("worker: ")), "{text}");
        for job in lines.iter().filter_map(|l| job_of(l, "started")) {
            *started.entry(job).or_default() += 1;
        }
    }
    assert_eq!(started.len(), 4, "{started:?}");
    assert!(started.values().all(|&n| n == 1), "a job was trained twice: {started:?}");
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, None));
}

#[test]
fn a_worker_stops_at_max_jobs_exits_when_idle_and_sigterm_leaves_its_jobs_resumable() {
    let env = Env::new();
    // Jobs long enough that the SIGTERM lands inside one.
    let file = env.write("long.toml", &signalled());
    // Nothing submitted: a worker with nothing to claim exits after --idle-exit.
    let started = Instant::now();
    let out = env.sweep(&["worker", "--idle-exit", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(stderr(&out).contains("worker: 0 done, 0 failed, 0 interrupted"), "{}", stderr(&out));

    let id = submit(&env, file.to_str().unwrap());
    // --max-jobs 1: one job trained, then the worker exits.
    let out = env.sweep(&["worker", "--max-jobs", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = statuses(&env).values().filter(|s| *s == "done").count();
    assert_eq!(done, 1, "{:?}\n{}", statuses(&env), stderr(&out));

    // SIGTERM (what Slurm sends at a time limit): the job stops at its last
    // recorded epoch, is interrupted, its lease released; exit 143.
    // One job slot: one job is running when the signal comes.
    let mut worker = Runner::spawn(&env, &["worker", "--sweep", &id, "--parallel", "1"]);
    assert!(worker.wait_for(PATIENCE, is_epoch_line), "{}", worker.seen.join("\n"));
    worker.signal("TERM");
    let (status, _, lines) = worker.finish();
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(143), "{text}");
    let store = sweep_store::Store::open_read_only(env.path("sweep.db")).unwrap();
    assert_eq!(store.leases(&id).unwrap(), Vec::new(), "leases released");
    drop(store);
    let after = statuses(&env);
    assert!(after.values().all(|s| s != "running"), "{after:?}");
    assert_eq!(after.values().filter(|s| *s == "interrupted").count(), 1, "{after:?}\n{text}");

    // Another worker finishes the sweep: identical to an uninterrupted run.
    let out = env.sweep(&["worker", "--sweep", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, None));
}

/// Whether the tests may use a Slurm cluster: `SWEEP_TEST_SLURM` set by
/// `.ci/run`'s `slurm_up`. Under CI its absence is a failure.
fn slurm_available(test: &str) -> bool {
    if std::env::var_os("SWEEP_TEST_SLURM").is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: CI=true but no Slurm cluster (SWEEP_TEST_SLURM is unset): .ci/run starts one"
    );
    eprintln!("skipped {test}: no Slurm cluster (`.ci/run` starts one and sets SWEEP_TEST_SLURM)");
    false
}

/// Waits until Slurm no longer lists the job.
fn wait_for_slurm_job(job: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = Command::new("squeue").args(["-h", "-j", job, "-o", "%i %T"]).output().expect("squeue");
        let listed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if listed.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "Slurm job {job} still listed after {limit:?}: {listed}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn epochs_recorded(env: &Env) -> usize {
    let Ok(store) = sweep_store::Store::open_read_only(env.path("sweep.db")) else { return 0 };
    let Ok(sweep) = store.find_sweep(None) else { return 0 };
    store.jobs(&sweep.id).unwrap().iter().map(|j| j.epochs_done as usize).sum()
}

#[test]
fn a_slurm_array_of_workers_runs_a_sweep_and_a_resubmit_after_scancel_finishes_it() {
    if !slurm_available("a_slurm_array_of_workers_runs_a_sweep_and_a_resubmit_after_scancel_finishes_it") {
        return;
    }
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let script = env.path("long.sbatch");
    let out = env.sweep(&[
        "slurm",
        file.to_str().unwrap(),
        "--workers",
        "4",
        "--idle-exit",
        "2",
        "--out",
        script.to_str().unwrap(),
        "--submit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    assert!(job.parse::<u64>().is_ok(), "a Slurm job id on stdout: {job:?}\n{}", stderr(&out));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-3"), "{text}");
    assert!(text.contains(" worker --db "), "{text}");

    // Cancel the array while its workers train.
    let deadline = Instant::now() + PATIENCE;
    while epochs_recorded(&env) < 6 {
        assert!(Instant::now() < deadline, "no epochs recorded by the array: {:?}", statuses(&env));
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancel = Command::new("scancel").arg(&job).status().expect("scancel");
    assert!(cancel.success());
    wait_for_slurm_job(&job, Duration::from_secs(90));
    let after_cancel = statuses(&env);
    assert!(after_cancel.values().any(|s| s != "done"), "the sweep ended before the cancel: {after_cancel:?}");
    // Every task stopped at a consistent point: none holds a job.
    assert!(after_cancel.values().all(|s| s != "running"), "{after_cancel:?}");

    // The same script again finishes the sweep.
    let again = Command::new("sbatch").arg("--parsable").arg(&script).output().expect("sbatch");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let job2 = String::from_utf8_lossy(&again.stdout).trim().to_owned();
    wait_for_slurm_job(&job2, Duration::from_secs(300));
    let logs: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
        .map(|e| format!("{}:\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default()))
        .collect();
    let got = results(&env, &env.path("sweep.db"));
    assert!(
        got["table"].as_array().unwrap().iter().all(|r| r["status"] == "done"),
        "{}\n{}",
        got["table"],
        logs.join("\n")
    );
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, None));
}

/// Eight jobs of twelve epochs on 1,200 images: long enough for workers to
/// be killed while they claim, train and record (about 3 s of work on a
/// fast core, where the 300 images of `LONG` took 1.3 s, done before the
/// kills were).
fn eight_jobs() -> String {
    LONG.replace("momentum = [0.0, 0.9]", "momentum = [0.0, 0.5, 0.8, 0.9]").replace("images = 300", "images = 1200")
}

/// Whether every job of the database's one sweep is done.
fn all_done(env: &Env, db: &str) -> bool {
    let table = env.sweep(&["--db", db, "table", "--format", "json"]);
    assert!(table.status.success(), "{}", stderr(&table));
    json(&table).as_array().unwrap().iter().all(|r| r["status"] == "done")
}

/// Issue 13: 8 workers on one database, SIGKILLed at random moments (20
/// kills, or as many as land before the sweep is done, at least 3) and
/// replaced: every job is done once, every epoch recorded once, and the
/// results equal one uninterrupted `sweep run`.
pub(crate) fn eight_workers_killed_at_random(db: &str) {
    let env = Env::new();
    let file = env.write("eight.toml", &eight_jobs());
    let cache = env.path("cache");
    let cache = cache.to_str().unwrap();
    let out = env.sweep(&["--db", db, "submit", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let worker = |env: &Env| Runner::spawn(env, &["--db", db, "worker", "--sweep", &id, "--cache-dir", cache]);
    let mut rng = Rng(13);
    let mut workers: Vec<Runner> = (0..8).map(|_| worker(&env)).collect();
    let mut kills = 0;
    let started = Instant::now();
    while kills < 20 {
        assert!(started.elapsed() < PATIENCE * 2, "20 kills took too long");
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        let victim = rng.below(workers.len() as u64) as usize;
        let mut runner = workers.swap_remove(victim);
        if !runner.exited() {
            runner.kill9();
            kills += 1;
        } else if all_done(&env, db) {
            // The others finished the sweep: nothing is left to kill.
            workers.push(runner);
            break;
        }
        workers.push(worker(&env));
    }
    eprintln!("{kills} kills landed");
    assert!(kills >= 3, "only {kills} kills landed before the sweep was done: give the jobs more work");
    for runner in workers {
        let (status, _, lines) = runner.finish();
        assert!(status.success(), "{status}:\n{}", lines.join("\n"));
    }
    // Whatever the kills left (a job of a worker killed after the others
    // exited), one more worker finishes: the dead workers' leases are
    // expired at once on this host.
    let out = env.sweep(&["--db", db, "worker", "--sweep", &id, "--cache-dir", cache]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = results_of(&env, db);
    let table = got["table"].as_array().unwrap();
    assert_eq!(table.len(), 8);
    for row in table {
        assert_eq!(row["status"], "done", "{row}");
        let epochs = &got["epochs"][row["job_id"].as_str().unwrap()];
        let numbers: Vec<i64> = epochs.as_array().unwrap().iter().map(|e| e["epoch"].as_i64().unwrap()).collect();
        assert_eq!(numbers, (1..=12).collect::<Vec<_>>(), "{row}");
    }
    // The same sweep, one `sweep run` on SQLite.
    let reference_db = env.path("reference.db");
    let out = env.sweep(&["--db", reference_db.to_str().unwrap(), "run", file.to_str().unwrap(), "--cache-dir", cache]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(got, results_of(&env, reference_db.to_str().unwrap()));
}

#[test]
fn eight_workers_on_sqlite_killed_at_random_do_every_job_once() {
    let env = Env::new();
    let db = env.path("sweep.db");
    eight_workers_killed_at_random(db.to_str().unwrap());
}

/// Every shard of the sweep's feature pass: (shard, status, attempts).
fn feature_shards(db: &std::path::Path) -> Vec<(i64, String, i64)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    // Before the run has made its tables: none.
    let Ok(mut stmt) = conn.prepare("SELECT shard, status, attempts FROM feature_shards ORDER BY cache_key, shard")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn two_workers_share_the_backbone_pass_by_shards_with_the_features_of_one_pass() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let id = submit(&env, file.to_str().unwrap());
    // 300 images in shards of 32 (the backbone batch): 10 shards.
    let workers: Vec<Runner> =
        (0..2).map(|_| Runner::spawn(&env, &["-v", "worker", "--sweep", &id, "--shard-images", "32"])).collect();
    let mut computed = Vec::new();
    for worker in workers {
        let (status, _, lines) = worker.finish();
        assert!(status.success(), "{status}:\n{}", lines.join("\n"));
        computed.push(lines.iter().filter(|l| l.contains("feature shard computed")).count());
    }
    let shards = feature_shards(&env.path("sweep.db"));
    assert_eq!(shards.len(), 10, "{shards:?}");
    assert!(shards.iter().all(|(_, status, attempts)| status == "done" && *attempts == 1), "{shards:?}");
    assert_eq!(computed.iter().sum::<usize>(), 10, "{computed:?}");
    assert!(computed.iter().all(|&n| n > 0), "both workers computed shards: {computed:?}");
    // The shards joined are the features of one pass: the same results as a
    // plain `sweep run` on its own cache.
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, Some("reference-cache")));
}

#[test]
fn a_backbone_pass_killed_half_way_resumes_from_its_last_shard() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let db = env.path("sweep.db");
    let mut runner = Runner::spawn(&env, &["run", file.to_str().unwrap(), "--shard-images", "32"]);
    let deadline = Instant::now() + PATIENCE;
    let done = |shards: &[(i64, String, i64)]| shards.iter().filter(|s| s.1 == "done").count();
    loop {
        let shards = if db.exists() { feature_shards(&db) } else { Vec::new() };
        if done(&shards) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline && !runner.exited(), "no shard done: {shards:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    runner.kill9();
    let before = feature_shards(&db);
    assert!(done(&before) < 10, "the pass ended before the kill: {before:?}");
    let out = env.sweep(&["resume", "--shard-images", "32"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = feature_shards(&db);
    // The shards done before the kill were not computed again.
    for (b, a) in before.iter().zip(&after) {
        if b.1 == "done" {
            assert_eq!(b, a, "{before:?}\n{after:?}");
        }
    }
    assert!(after.iter().all(|s| s.1 == "done"), "{after:?}");
    let got = results(&env, &db);
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, Some("reference-cache")));
}

#[test]
fn eight_workers_on_postgres_killed_at_random_do_every_job_once() {
    let Some(pg) = crate::postgres::PgDb::new() else { return };
    eight_workers_killed_at_random(&pg.url);
}
