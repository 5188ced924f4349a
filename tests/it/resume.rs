//! Issue #6: run, interrupt (kill -9, Ctrl-C) and resume sweeps without
//! losing or repeating an epoch; failed jobs; several runners on one
//! database; `--parallel`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{json, stderr, Env};

/// Four jobs of 12 epochs on 300 generated images, one sample per batch: a
/// few seconds of backbone, then epochs of a few tens of milliseconds, so a
/// kill lands anywhere (startup, backbone pass, cache read, mid-epoch, between
/// jobs).
pub(crate) const LONG: &str = r#"
name = "long"

[data]
layout = "synthetic"
classes = 4
images = 300
width = 40
height = 32
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 1
epochs = 12

[grid]
lr = [0.01, 0.05]
momentum = [0.0, 0.9]
"#;

/// Longest any single wait may take before the test gives up (a hung runner).
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// splitmix64: seeded delays, the same on every run of the test.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A `sweep` process whose stderr is read line by line as it runs.
pub(crate) struct Runner {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub(crate) seen: Vec<String>,
}

impl Runner {
    pub(crate) fn spawn(env: &Env, args: &[&str]) -> Runner {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
            .args(args)
            .env("SWEEP_DB", env.path("sweep.db"))
            .env_remove("RUST_LOG")
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sweep");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Runner { child, lines, seen: Vec::new() }
    }

    /// Reads stderr until a line satisfies `until` (true), the process closes
    /// stderr (false), or `limit` passes (false).
    pub(crate) fn wait_for(&mut self, limit: Duration, mut until: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = until(&line);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits for the `n`-th epoch line from now; false if the process ended first.
    pub(crate) fn wait_epochs(&mut self, n: usize) -> bool {
        let mut count = 0;
        let hit = self.wait_for(PATIENCE, |l| {
            count += usize::from(is_epoch_line(l));
            count >= n
        });
        assert!(hit || self.exited(), "no epoch line in {PATIENCE:?}:\n{}", self.seen.join("\n"));
        hit
    }

    pub(crate) fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// SIGKILL, then reap it (a zombie would still look alive to the next runner).
    pub(crate) fn kill9(mut self) -> Vec<String> {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
        self.seen.extend(self.lines.try_iter());
        self.seen
    }

    pub(crate) fn interrupt(&self) {
        self.signal("INT");
    }

    /// `kill -NAME` the process.
    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("run kill -{name}: {e}"))
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to end: its status, stdout and every stderr line.
    pub(crate) fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
        self.wait_for(PATIENCE, |_| false);
        let status = wait_with_limit(&mut self.child, &self.seen);
        let mut out = String::new();
        self.child.stdout.take().expect("piped stdout").read_to_string(&mut out).expect("read stdout");
        (status, out, self.seen)
    }
}

fn wait_with_limit(child: &mut Child, seen: &[String]) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sweep did not end:\n{}", seen.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn is_epoch_line(line: &str) -> bool {
    line.starts_with("job ") && line.contains(" epoch ") && line.contains(": train loss")
}

/// The table and every job's epochs, without the wall-clock `seconds` (and `total_seconds`).
pub(crate) fn results(env: &Env, db: &Path) -> Value {
    results_of(env, db.to_str().unwrap())
}

/// [`results`] of a database given as `--db` takes it (a path or a URL).
pub(crate) fn results_of(env: &Env, db: &str) -> Value {
    let table = env.sweep(&["--db", db, "table", "--format", "json"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let table = without_seconds(json(&table));
    let mut epochs = BTreeMap::new();
    for row in table.as_array().unwrap() {
        let id = row["job_id"].as_str().unwrap();
        let show = env.sweep(&["--db", db, "show", id, "--format", "json"]);
        assert!(show.status.success(), "{}", stderr(&show));
        epochs.insert(id.to_owned(), without_seconds(json(&show)));
    }
    serde_json::json!({ "table": table, "epochs": epochs })
}

pub(crate) fn without_seconds(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("seconds");
            map.remove("total_seconds");
            for x in map.values_mut() {
                *x = without_seconds(x.take());
            }
        }
        Value::Array(items) => {
            for x in items {
                *x = without_seconds(x.take());
            }
        }
        _ => {}
    }
    v
}

/// Every job done, each of its epochs (1..=its `epochs`) recorded once.
pub(crate) fn assert_complete(results: &Value, jobs: usize) {
    let table = results["table"].as_array().unwrap();
    assert_eq!(table.len(), jobs);
    for row in table {
        assert_eq!(row["status"], "done", "{row}");
        let epochs = &results["epochs"][row["job_id"].as_str().unwrap()];
        let numbers: Vec<i64> = epochs.as_array().unwrap().iter().map(|e| e["epoch"].as_i64().unwrap()).collect();
        let configured = row["epochs"].as_i64().expect("a job's epochs");
        assert_eq!(numbers, (1..=configured).collect::<Vec<_>>(), "{row}");
    }
}

/// The same sweep run once, uninterrupted, in its own database.
pub(crate) fn reference(env: &Env, file: &Path, cache: Option<&str>) -> Value {
    let db = env.path("reference.db");
    let mut args = vec!["--db", db.to_str().unwrap(), "run", file.to_str().unwrap()];
    if let Some(dir) = cache {
        args.extend(["--cache-dir", dir]);
    }
    let out = env.sweep(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = results(env, &db);
    assert_complete(&results, 4);
    results
}

pub(crate) fn job_of(line: &str, what: &str) -> Option<String> {
    let rest = line.strip_prefix("job ")?;
    let (id, tail) = rest.split_once(' ')?;
    tail.starts_with(what).then(|| id.to_owned())
}

#[test]
fn kill_9_at_random_moments_then_resume_loses_and_repeats_nothing() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let file_arg = file.to_str().unwrap();
    let mut rng = Rng(6);
    let mut kills = 0;
    let mut resumed = 0;

    // First, on a cold cache: kill during the backbone pass.
    let mut runner = Runner::spawn(&env, &["run", file_arg]);
    assert!(runner.wait_for(PATIENCE, |l| l.starts_with("features: ")), "{:?}", runner.seen);
    std::thread::sleep(Duration::from_millis(rng.below(300)));
    runner.kill9();
    kills += 1;

    // Then at random moments, alternating `run FILE` and `resume`: some a
    // random time after the start (startup, registration, cache read, the
    // first epochs), some at a random point of an epoch of a running job.
    // Each round lets at most a few epochs through, so the sweep outlives
    // the kills.
    while kills < 12 {
        let args: &[&str] = if kills % 2 == 0 { &["run", file_arg] } else { &["resume"] };
        let mut runner = Runner::spawn(&env, args);
        if kills % 3 == 0 {
            let delay = Duration::from_millis(rng.below(1500));
            let mut epochs = 0;
            runner.wait_for(delay, |l| {
                epochs += usize::from(is_epoch_line(l));
                epochs >= 2
            });
        } else {
            let started = Instant::now();
            if runner.wait_epochs(1 + rng.below(2) as usize) {
                // Somewhere inside the next epoch, as long as the last one took.
                let one = started.elapsed().as_millis() as u64 / 3 + 1;
                std::thread::sleep(Duration::from_millis(rng.below(one.min(60))));
            }
        }
        assert!(!runner.exited(), "the sweep ended before {kills} kills; make it longer");
        let seen = runner.kill9();
        resumed += seen.iter().filter(|l| l.contains("(resuming after epoch")).count();
        kills += 1;
    }
    assert!(resumed > 0, "no kill interrupted a job between epochs");

    // A run that is let finish completes every job.
    let runner = Runner::spawn(&env, &["resume", "--format", "json"]);
    let (status, _, lines) = runner.finish();
    assert!(status.success(), "{status}:\n{}", lines.join("\n"));

    // Identical, bit for bit, to a run never interrupted, with its own
    // database and its own backbone pass.
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, Some("reference-cache")));
}

/// `LONG` with jobs long enough to be signalled while two of them train. At
/// 12 epochs a job took 40 ms, and under CI's load one job had ended before
/// the second slot claimed its own.
pub(crate) const SIGNALLED_EPOCHS: i64 = 120;

pub(crate) fn signalled() -> String {
    LONG.replace("epochs = 12", &format!("epochs = {SIGNALLED_EPOCHS}"))
}

#[test]
fn ctrl_c_stops_jobs_at_their_last_epoch_and_resume_completes() {
    let env = Env::new();
    let file = env.write("long.toml", &signalled());
    let file_arg = file.to_str().unwrap();

    // Ctrl-C during the backbone pass: no job starts.
    let mut runner = Runner::spawn(&env, &["run", file_arg, "--parallel", "2"]);
    assert!(runner.wait_for(PATIENCE, |l| l.starts_with("features: ")), "{:?}", runner.seen);
    runner.interrupt();
    let (status, _, lines) = runner.finish();
    assert_eq!(status.code(), Some(130), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("continue with `sweep resume ")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| job_of(l, "started").is_some()), "{}", lines.join("\n"));

    // Ctrl-C while two jobs train.
    let mut runner = Runner::spawn(&env, &["resume", "--parallel", "2"]);
    let mut started = BTreeSet::new();
    let mut progressed = BTreeSet::new();
    assert!(
        runner.wait_for(PATIENCE, |l| {
            started.extend(job_of(l, "started"));
            if is_epoch_line(l) {
                progressed.extend(job_of(l, "epoch"));
            }
            progressed.len() == 2
        }),
        "{}",
        runner.seen.join("\n")
    );
    runner.interrupt();
    let (status, stdout, lines) = runner.finish();
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(stdout.contains("interrupted (") && stdout.contains("pending"), "the table is printed: {stdout}");
    let stop = lines.iter().position(|l| l.starts_with("stopping (SIGINT):")).expect("stopping message");
    assert!(!lines[stop..].iter().any(|l| job_of(l, "started").is_some()), "a job started after Ctrl-C:\n{text}");
    let sweep_id = lines.iter().find_map(|l| l.split("continue with `sweep resume ").nth(1)).expect("how to resume");
    let sweep_id = sweep_id.trim_end_matches('`').to_owned();

    // The jobs that were running are interrupted, each with the epochs it
    // reported and no more; the others were never touched.
    let table = env.sweep(&["table", "--format", "json"]);
    let table = json(&table);
    let mut last_epoch: BTreeMap<String, i64> = BTreeMap::new();
    for line in lines.iter().filter(|l| is_epoch_line(l)) {
        let id = job_of(line, "epoch").unwrap();
        let n = line.split(" epoch ").nth(1).and_then(|t| t.split(':').next()).unwrap().parse().unwrap();
        last_epoch.insert(id, n);
    }
    for row in table.as_array().unwrap() {
        let id = row["job_id"].as_str().unwrap();
        let show = json(&env.sweep(&["show", id, "--format", "json"]));
        let recorded = show.as_array().unwrap().len() as i64;
        if started.contains(id) {
            assert_eq!(row["status"], "interrupted", "{text}");
            assert_eq!(recorded, last_epoch[id], "{id}: every reported epoch is recorded, no more");
            assert!(recorded < SIGNALLED_EPOCHS, "{row}");
        } else {
            assert_eq!(row["status"], "pending", "{row}\n{text}");
            assert_eq!(recorded, 0, "{row}");
        }
    }
    assert_eq!(started.len(), 2, "{text}");

    // Ctrl-C twice in a row: out at once, still with code 130.
    let mut runner = Runner::spawn(&env, &["resume", &sweep_id]);
    assert!(runner.wait_epochs(1), "{}", runner.seen.join("\n"));
    runner.interrupt();
    runner.interrupt();
    let (status, _, lines) = runner.finish();
    assert_eq!(status.code(), Some(130), "{}", lines.join("\n"));

    // And the store is consistent: resuming completes the sweep with the
    // results of an uninterrupted run.
    let out = env.sweep(&["resume", &sweep_id, "--parallel", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, None));
}

/// Issue 16: SIGTERM (Slurm at a time limit, Kubernetes on eviction) and
/// SIGHUP (a closed terminal) stop a run like Ctrl-C: at a consistent point,
/// leases released, jobs `interrupted`, exit 128 + the signal's number.
#[test]
fn sigterm_and_sighup_stop_cleanly_and_resume_completes() {
    let env = Env::new();
    let file = env.write("long.toml", &signalled());
    let file_arg = file.to_str().unwrap();

    // SIGHUP during the backbone pass: no job starts.
    let mut runner = Runner::spawn(&env, &["run", file_arg, "--parallel", "2"]);
    assert!(runner.wait_for(PATIENCE, |l| l.starts_with("features: ")), "{:?}", runner.seen);
    runner.signal("HUP");
    let (status, _, lines) = runner.finish();
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(129), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("stopping (SIGHUP):")), "{text}");
    assert!(!lines.iter().any(|l| job_of(l, "started").is_some()), "{text}");

    // SIGTERM while two jobs train.
    let mut runner = Runner::spawn(&env, &["resume", "--parallel", "2"]);
    let mut progressed = BTreeSet::new();
    assert!(
        runner.wait_for(PATIENCE, |l| {
            if is_epoch_line(l) {
                progressed.extend(job_of(l, "epoch"));
            }
            progressed.len() == 2
        }),
        "{}",
        runner.seen.join("\n")
    );
    runner.signal("TERM");
    let (status, _, lines) = runner.finish();
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("stopping (SIGTERM):")), "{text}");
    assert!(lines.iter().any(|l| l.contains("continue with `sweep resume ")), "{text}");
    // Nothing is left running under a lease another runner would wait out.
    let store = sweep_store::Store::open_read_only(env.path("sweep.db")).unwrap();
    let sweep = store.find_sweep(None).unwrap();
    for job in store.jobs(&sweep.id).unwrap() {
        assert_ne!(job.status, sweep_store::Status::Running, "{job:?}");
    }
    assert_eq!(store.leases(&sweep.id).unwrap(), Vec::new(), "leases released");
    let interrupted =
        store.jobs(&sweep.id).unwrap().iter().filter(|j| j.status == sweep_store::Status::Interrupted).count();
    assert_eq!(interrupted, 2, "{text}");
    drop(store);

    // Resuming completes the sweep with the results of an uninterrupted run.
    let out = env.sweep(&["resume", "--parallel", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = results(&env, &env.path("sweep.db"));
    assert_complete(&got, 4);
    assert_eq!(got, reference(&env, &file, None));
}

/// One job diverges (its loss overflows to inf/NaN at the first epoch).
const DIVERGES: &str = r#"
name = "diverges"

[data]
layout = "synthetic"
classes = 3
images = 60
width = 40
height = 32
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 4
epochs = 3
momentum = 0.9

[[configs]]
lr = 0.01

[[configs]]
lr = 1e38

[[configs]]
lr = 0.05
"#;

#[test]
fn a_failed_job_fails_alone_and_retry_failed_runs_it_again() {
    let env = Env::new();
    let file = env.write("diverges.toml", DIVERGES);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows = json(&out);
    let statuses: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["done", "failed", "done"], "the others go on");
    let failed_id = rows[1]["job_id"].as_str().unwrap().to_owned();
    let err = stderr(&out);
    assert!(err.contains(&format!("job {failed_id} failed: epoch 1: the train loss is")), "{err}");
    assert!(err.contains("1 job(s) failed") && err.contains("--retry-failed"), "{err}");

    let store = sweep_store::Store::open(env.path("sweep.db")).unwrap();
    let sweep = store.find_sweep(None).unwrap();
    let jobs = |store: &sweep_store::Store| -> Vec<(i64, Option<String>)> {
        store.jobs(&sweep.id).unwrap().into_iter().map(|j| (j.attempts, j.error)).collect()
    };
    let before = jobs(&store);
    assert_eq!(before[1].0, 1);
    let error = before[1].1.clone().expect("the failed job keeps its error");
    assert!(error.contains("diverged"), "{error}");
    assert_eq!((before[0].0, before[2].0), (1, 1));
    assert_eq!((&before[0].1, &before[2].1), (&None, &None));

    // Resuming without --retry-failed leaves it failed, and still says so.
    let out = env.sweep(&["resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(jobs(&store), before);

    // --retry-failed runs it again; it fails the same way; the done jobs are
    // not trained again.
    let out = env.sweep(&["resume", "--retry-failed", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("job {failed_id} started")), "{}", stderr(&out));
    let after = jobs(&store);
    assert_eq!(after[1], (2, Some(error)));
    assert_eq!((after[0].0, after[2].0), (1, 1));
    let rows = json(&out);
    assert_eq!(rows[1]["status"], "failed");
    assert_eq!(rows[0]["status"], "done");
}

#[test]
fn four_runners_on_one_database_share_the_jobs() {
    let env = Env::new();
    // Smaller: each of the four runs its own backbone pass on the cold cache.
    let small = LONG.replace("epochs = 12", "epochs = 6").replace("images = 300", "images = 120");
    let file = env.write("long.toml", &small);
    let file = file.to_str().unwrap();
    let runners: Vec<Runner> = (0..4)
        .map(|i| {
            let args: &[&str] = match i {
                0 | 1 => &["run", file, "--format", "json"],
                2 => &["-v", "run", file, "--format", "json"],
                _ => &["-v", "run", file, "--format", "json", "--parallel", "2"],
            };
            Runner::spawn(&env, args)
        })
        .collect();
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    for runner in runners {
        let (status, stdout, lines) = runner.finish();
        let text = lines.join("\n");
        assert!(status.success(), "{status}:\n{text}");
        assert!(!text.contains("locked") && !text.contains("busy"), "{text}");
        // Each runner ends when the sweep does, and prints its table.
        let rows: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{rows}");
        for id in lines.iter().filter_map(|l| job_of(l, "started")) {
            *started.entry(id).or_default() += 1;
        }
    }
    assert_eq!(started.len(), 4, "{started:?}");
    assert!(started.values().all(|&n| n == 1), "a job was trained twice: {started:?}");

    let store = sweep_store::Store::open(env.path("sweep.db")).unwrap();
    let sweep = store.find_sweep(None).unwrap();
    for job in store.jobs(&sweep.id).unwrap() {
        assert_eq!(job.status, sweep_store::Status::Done, "{job:?}");
        assert_eq!(job.attempts, 1, "{job:?}");
        let epochs: Vec<i64> = store.epochs(&job.id).unwrap().iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, (1..=6).collect::<Vec<_>>());
    }
}

#[test]
fn parallel_2_trains_two_jobs_at_once_with_the_results_of_parallel_1() {
    let env = Env::new();
    // Jobs of a few hundred milliseconds: the second slot claims its job
    // within a few milliseconds of the first (their connections are open
    // before either claims), so the first job is still training even on a
    // loaded machine. (At 12 epochs a job took 36 ms, and a slot that opened
    // its connections itself missed it under CI's load.)
    let file = env.write("long.toml", &LONG.replace("epochs = 12", "epochs = 48"));
    let one = env.sweep(&["--db", "one.db", "run", file.to_str().unwrap(), "--parallel", "1"]);
    assert!(one.status.success(), "{}", stderr(&one));

    // Not a terminal: plain lines, `-v` adds the log, no colour codes.
    let two = env.sweep(&["-v", "run", file.to_str().unwrap(), "--parallel", "2"]);
    let err = stderr(&two);
    assert!(two.status.success(), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in plain output: {err}");
    assert!(err.contains("INFO") && err.contains("job started"), "{err}");
    // Two jobs started before the first one ended.
    let lines: Vec<&str> = err.lines().collect();
    let first_end = lines.iter().position(|l| job_of(l, "done").is_some()).expect("a job done");
    let before: BTreeSet<String> = lines[..first_end].iter().filter_map(|l| job_of(l, "started")).collect();
    assert_eq!(before.len(), 2, "{err}");

    let got = results(&env, &env.path("sweep.db"));
    let table = got["table"].as_array().unwrap();
    assert_eq!(table.len(), 4);
    for row in table {
        assert_eq!(row["status"], "done", "{row}");
        assert_eq!(got["epochs"][row["job_id"].as_str().unwrap()].as_array().unwrap().len(), 48, "{row}");
    }
    assert_eq!(got, results(&env, &env.path("one.db")));
}
