//! Pruning (issue 12) through the CLI: the median rule and ASHA stop some
//! trials and keep the best alive (checked against a full run of the same
//! trials), decisions survive Ctrl-C and resume (the resumed sweep equals an
//! uninterrupted one), pruned trials are never run again, and `[prune]`'s
//! errors are reported at their lines.

use serde_json::Value;

use crate::resume::{is_epoch_line, results, Runner};
use crate::{json, stderr, stdout, Env};

/// Small generated data: each trial is a head on 60 images of 6 classes,
/// validated on 60 (accuracy in steps of 1/60), 9 epochs.
pub(crate) const TRIAL_HEAD: &str = r#"
[data]
layout = "synthetic"
classes = 6
images = 120
width = 40
height = 32
valid_fraction = 0.5

[model]
backbone = "resnet18"
weights = "random"
image_size = 32
"#;

/// Smaller still, for what needs no ranking.
const HEAD: &str = r#"
[data]
layout = "synthetic"
classes = 3
images = 48
width = 40
height = 32
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32
"#;

/// 16 random trials over a wide learning rate, so some are clearly behind.
///
/// Pruning is a bet that a trial behind early stays behind; it can stop the
/// trial that would have won (with `seed = 3` the median rule stops the
/// eventual best at epoch 2, a slow starter). These trials are ones where
/// neither rule does, which the test checks against their full run.
fn trials(prune: &str) -> String {
    format!(
        "name = \"prune\"\n{TRIAL_HEAD}\n[search]\nmethod = \"random\"\ntrials = 16\nseed = 4\n\n[space]\n\
         lr = {{ log_uniform = [1e-4, 0.1] }}\nmomentum = 0.9\nbatch_size = 8\nepochs = 9\n{prune}"
    )
}

/// ASHA's promotions: at the end of a sweep, every trial in the top 1/eta of
/// a rung (at least as good as the (1 - 1/eta) quantile of the others that
/// reached it) went past it, whenever it arrived.
fn assert_top_went_on(got: &Value, rungs: &[usize], eta: u32) {
    let table = rows(&got["table"]);
    let value = |job: &str, epoch: usize| rows(&got["epochs"][job])[epoch - 1]["valid_acc"].as_f64().unwrap();
    for &rung in rungs {
        let reached: Vec<(&str, f64, u64)> = table
            .iter()
            .filter(|r| r["epochs_done"].as_u64().unwrap() >= rung as u64)
            .map(|r| (id(r), value(id(r), rung), r["epochs_done"].as_u64().unwrap()))
            .collect();
        for (job, x, done) in &reached {
            let others: Vec<f64> = reached.iter().filter(|(j, _, _)| j != job).map(|(_, y, _)| *y).collect();
            if !others.is_empty() && *x >= percentile(&others, 100.0 * (1.0 - 1.0 / eta as f64)) {
                assert!(*done > rung as u64, "{job} is in the top 1/{eta} at epoch {rung} but stopped there: {got}");
            }
        }
    }
}

/// Issue 12: ASHA promotes a trial waiting at a rung once later trials put
/// it in the rung's top 1/eta. Here the trials come in the grid's order: the
/// best first, so the next ones stop at its side, then worse ones, which
/// lift those back into the top half. A promoted trial goes on from its
/// checkpoint: its epochs equal the same trial run in full.
#[test]
fn asha_promotes_a_waiting_trial_when_later_trials_rank_it_higher() {
    let env = Env::new();
    let grid = |prune: &str| {
        format!(
            "name = \"promote\"\n{TRIAL_HEAD}\n[train]\nbatch_size = 8\nmomentum = 0.9\nepochs = 4\n\n[grid]\n\
             lr = [0.05, 0.01, 0.0001, 0.0002, 0.0003, 0.0005]\n{prune}"
        )
    };
    let full = env.write("full.toml", &grid(""));
    let full = run(&env, full.to_str().unwrap(), "full.db");
    let file = env.write("asha.toml", &grid("\n[prune]\nmethod = \"asha\"\nmin_epochs = 1\neta = 2\n"));
    let db = env.path("asha.db");
    let out = env.sweep(&["--db", db.to_str().unwrap(), "-v", "run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let promoted: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("promoted: later trials put it in the top of its rung"))
        .filter_map(|l| l.split("job=").nth(1)?.split_whitespace().next())
        .collect();
    assert!(!promoted.is_empty(), "{err}");
    let got = results(&env, &db);
    for job in &promoted {
        let n = rows(&got["epochs"][job]).len();
        assert!(n > 1, "{job} went on after its promotion");
        assert_eq!(rows(&got["epochs"][job])[..], rows(&full["epochs"][job])[..n], "{job}");
    }
    assert_top_went_on(&got, &[1, 2], 2);
    let statuses: Vec<&str> = rows(&got["table"]).iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == "done" || *s == "pruned"), "{statuses:?}");
    assert!(statuses.contains(&"pruned"), "{statuses:?}");
}

/// numpy's linear-interpolation percentile (every value a number), the
/// rank snapped to a whole number within 1e-9 as the pruner does.
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (v.len() - 1) as f64;
    let rank = if (rank - rank.round()).abs() < 1e-9 { rank.round() } else { rank };
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

fn id(row: &Value) -> &str {
    row["job_id"].as_str().unwrap()
}

/// Runs `file` into its own database; its table (best first) and each job's epochs.
fn run(env: &Env, file: &str, db: &str) -> Value {
    let db = env.path(db);
    let out = env.sweep(&["--db", db.to_str().unwrap(), "-v", "run", file]);
    assert!(out.status.success(), "{}", stderr(&out));
    results(env, &db)
}

fn check_pruning(method: &str, prune: &str) {
    let env = Env::new();
    let full = env.write("full.toml", &trials(""));
    let pruned = env.write("pruned.toml", &trials(prune));
    let full = run(&env, full.to_str().unwrap(), "full.db");
    let got = run(&env, pruned.to_str().unwrap(), "pruned.db");
    let (table, reference) = (rows(&got["table"]), rows(&full["table"]));
    assert_eq!(table.len(), 16);
    // The same trials (pruning is no part of a job's id).
    let mut a: Vec<&str> = table.iter().map(id).collect();
    let mut b: Vec<&str> = reference.iter().map(id).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{method}");

    let statuses: Vec<&str> = table.iter().map(|r| r["status"].as_str().unwrap()).collect();
    let n_pruned = statuses.iter().filter(|s| **s == "pruned").count();
    assert!(n_pruned > 0 && n_pruned < 16, "{method}: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == "done" || *s == "pruned"), "{method}: {statuses:?}");
    // Pruned trials come after the finished ones.
    let first_pruned = statuses.iter().position(|s| *s == "pruned").unwrap();
    assert!(statuses[first_pruned..].iter().all(|s| *s == "pruned"), "{method}: {statuses:?}");

    // The best trial of the full run is never pruned: it is the best here too.
    let best = id(&reference[0]);
    assert_eq!(id(&table[0]), best, "{method}: the full run's best is not the pruned run's best");
    assert_eq!(table[0]["status"], "done");
    assert_eq!(table[0]["best_valid_acc"], reference[0]["best_valid_acc"]);

    for row in table {
        let epochs = rows(&got["epochs"][id(row)]);
        let full_epochs = rows(&full["epochs"][id(row)]);
        if row["status"] == "pruned" {
            // It keeps the epochs it ran, the same as the full run's first ones,
            // and says where and why it stopped.
            let at = row["prune_epoch"].as_i64().unwrap();
            assert!((1..9).contains(&at), "{row}");
            assert_eq!(epochs.len() as i64, at, "{row}");
            assert_eq!(row["epochs_done"], at);
            assert_eq!(epochs[..], full_epochs[..at as usize], "{row}");
            let reason = row["prune_reason"].as_str().unwrap();
            assert!(reason.contains("valid_acc"), "{reason}");
            match method {
                "asha" => {
                    // Rungs at epochs 1 and 3 (eta 3; 9 is the last epoch).
                    assert!(matches!(at, 1 | 3), "{row}");
                    assert_eq!(row["prune_rung"].as_i64(), Some(if at == 1 { 0 } else { 1 }), "{row}");
                }
                _ => {
                    assert!(row["prune_rung"].is_null(), "{row}");
                    assert!(reason.contains("median"), "{reason}");
                }
            }
        } else {
            assert_eq!(epochs, full_epochs, "{row}");
            assert!(row["prune_epoch"].is_null() && row["prune_reason"].is_null(), "{row}");
        }
    }

    if method == "asha" {
        assert_top_went_on(&got, &[1, 3], 3);
        assert!(!statuses.contains(&"waiting"), "{statuses:?}");
    }

    // Status counts them; the text table says where they stopped.
    let db = env.path("pruned.db");
    let db = db.to_str().unwrap();
    let status = json(&env.sweep(&["--db", db, "status", "--format", "json"]));
    assert_eq!(status[0]["pruned"], n_pruned as i64, "{status}");
    let text = stdout(&env.sweep(&["--db", db, "table"]));
    assert!(text.lines().nth(1).unwrap().contains("Pruned At"), "{text}");
    assert!(text.contains(&format!("{n_pruned} job(s) pruned")), "{text}");
    let best_json = json(&env.sweep(&["--db", db, "best", "--format", "json"]));
    assert_eq!(best_json["job_id"], best);

    // Running it again, or resuming with --retry-failed, trains nothing.
    let again = env.sweep(&["--db", db, "-v", "resume", "--retry-failed"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stderr(&again).matches("job started").count(), 0, "{}", stderr(&again));
    assert_eq!(results(&env, &env.path("pruned.db")), got);
}

#[test]
fn asha_prunes_some_trials_and_keeps_the_best_alive() {
    check_pruning("asha", "\n[prune]\nmethod = \"asha\"\nmin_epochs = 1\neta = 3\n");
}

#[test]
fn the_median_rule_prunes_some_trials_and_keeps_the_best_alive() {
    check_pruning("median", "\n[prune]\nmethod = \"median\"\nstartup_trials = 3\nwarmup_epochs = 1\n");
}

/// Slower epochs (one sample a batch, 300 images) so that Ctrl-C lands in
/// the middle of the sweep.
const LONG: &str = r#"
name = "long-asha"

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
epochs = 9

[grid]
lr = [0.0001, 0.001, 0.01, 0.05]
momentum = [0.0, 0.9]

[prune]
method = "asha"
min_epochs = 1
eta = 2
"#;

#[test]
fn decisions_survive_ctrl_c_and_the_resumed_sweep_equals_an_uninterrupted_one() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let file_arg = file.to_str().unwrap();

    // Uninterrupted, in its own database.
    let reference_db = env.path("reference.db");
    let out = env.sweep(&["--db", reference_db.to_str().unwrap(), "run", file_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = results(&env, &reference_db);
    let pruned = rows(&reference["table"]).iter().filter(|r| r["status"] == "pruned").count();
    assert!(pruned > 0, "{reference}");

    // Ctrl-C after 14 epochs: past the first trials and their decisions.
    let mut runner = Runner::spawn(&env, &["run", file_arg]);
    assert!(runner.wait_epochs(14), "the sweep ended before 14 epochs:\n{}", runner.seen.join("\n"));
    runner.interrupt();
    let (status, _, lines) = runner.finish();
    assert_eq!(status.code(), Some(130), "{}", lines.join("\n"));
    let partial = results(&env, &env.path("sweep.db"));
    let statuses: Vec<&str> = rows(&partial["table"]).iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"pending"), "the Ctrl-C came too late: {statuses:?}");

    // Resumed (twice, the second with --retry-failed: nothing left to train).
    let out = env.sweep(&["-v", "resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // ASHA's stops wait at their rung until the sweep has nothing left to
    // run: at the Ctrl-C some wait, and none is pruned for good yet.
    assert!(statuses.contains(&"waiting"), "{statuses:?}");
    assert!(!statuses.contains(&"pruned"), "{statuses:?}");
    assert!(lines.iter().filter(|l| is_epoch_line(l)).count() >= 14);
    assert_eq!(results(&env, &env.path("sweep.db")), reference);
}

#[test]
fn prune_errors_are_reported_at_their_lines() {
    let env = Env::new();
    for (prune, key, what) in [
        ("method = \"hyperband\"", "prune.method", "must be \"median\" or \"asha\", got \"hyperband\""),
        ("method = \"asha\"\nbrackets = 101", "prune.brackets", "must be between 1 and 100, got 101"),
        ("method = \"asha\"\neta = 1", "prune.eta", "must be between 2 and 100, got 1"),
        ("method = \"asha\"\nwarmup_epochs = 2", "prune.warmup_epochs", "applies to method = \"median\" only"),
        ("method = \"median\"\nmin_epochs = 2", "prune.min_epochs", "applies to method = \"asha\" only"),
        ("method = \"median\"\ninterval = 0", "prune.interval", "must be between 1 and 100000, got 0"),
        ("method = \"median\"\npatience = 3", "prune.patience", "unknown key"),
    ] {
        let src = format!("name = \"bad\"\n{HEAD}\n[prune]\n{prune}\n");
        let file = env.write("bad.toml", &src);
        let out = env.sweep(&["plan", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let line = src.lines().count();
        let want = format!("bad.toml:{line}: {key}: {what}");
        let err = stderr(&out);
        assert!(err.lines().any(|l| l.contains(&want)), "no `{want}` in:\n{err}");
    }
    // No method at all.
    let src = format!("name = \"bad\"\n{HEAD}\n[prune]\neta = 3\n");
    let file = env.write("bad.toml", &src);
    let err = stderr(&env.sweep(&["plan", file.to_str().unwrap()]));
    assert!(err.contains("prune.method: missing: \"median\" or \"asha\""), "{err}");
}

#[test]
fn pruning_is_part_of_the_sweep_id_never_of_a_job_id() {
    let env = Env::new();
    let plain = env.write("plain.toml", &trials(""));
    let asha = env.write("asha.toml", &trials("\n[prune]\nmethod = \"asha\"\n"));
    let plan = |f: &std::path::Path| json(&env.sweep(&["plan", f.to_str().unwrap(), "--format", "json"]));
    let ids = |v: &Value| rows(v).iter().map(|r| id(r).to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&plan(&plain)), ids(&plan(&asha)));
    for f in [&plain, &asha] {
        let out = env.sweep(&["run", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(rows(&status).len(), 2, "two sweeps: {status}");
    assert_ne!(status[0]["sweep_id"], status[1]["sweep_id"]);
}

/// Jobs that differ only in `workers` (decode threads: speed, never results).
fn workers_grid() -> String {
    format!("name = \"workers\"\n{HEAD}\n[train]\nbatch_size = 8\nepochs = 3\n\n[grid]\nworkers = [1, 2]\nlr = [0.01, 0.05]\n")
}

#[test]
fn jobs_that_differ_only_in_speed_are_trained_once() {
    for parallel in ["1", "2"] {
        let env = Env::new();
        let file = env.write("workers.toml", &workers_grid());
        let out = env.sweep(&["-v", "run", file.to_str().unwrap(), "--parallel", parallel, "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        // Four jobs, two trained: the workers = 2 ones take the results of their workers = 1 twins.
        assert_eq!(err.matches("job started").count(), 2, "--parallel {parallel}:\n{err}");
        assert_eq!(err.matches("takes the result of job").count(), 2, "{err}");
        let db = rusqlite::Connection::open(env.path("sweep.db")).unwrap();
        let epochs: i64 = db.query_row("SELECT count(*) FROM epochs", [], |r| r.get(0)).unwrap();
        assert_eq!(epochs, 2 * 3);
        let table = json(&out);
        let table = rows(&table);
        assert_eq!(table.len(), 4);
        for row in table {
            assert_eq!(row["status"], "done", "{row}");
            assert_eq!(row["epochs_done"], 3, "{row}");
            if row["workers"] == 2 {
                let twin = table.iter().find(|r| r["job_id"] == row["same_as"]).expect("its twin");
                assert_eq!(twin["workers"], 1);
                for key in ["best_valid_acc", "best_epoch", "final_train_acc", "best_valid_loss", "lr"] {
                    assert_eq!(row[key], twin[key], "{key}: {row} {twin}");
                }
                assert_eq!(row["seconds"], 0.0, "not trained: {row}");
                // Its epochs are its twin's.
                let show = |job: &str| json(&env.sweep(&["show", job, "--format", "json"]));
                assert_eq!(show(id(row)), show(id(twin)));
                let text = stdout(&env.sweep(&["show", id(row)]));
                assert!(text.starts_with(&format!("job {}: not trained, the epochs of job {}", id(row), id(twin))));
            } else {
                assert!(row["same_as"].is_null(), "{row}");
            }
        }
        // `sweep export`: every job's epochs and head, the copies' their twins'.
        let out_dir = env.path("export");
        let out = env.sweep(&["export", "--out", out_dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let epochs_csv = std::fs::read_to_string(out_dir.join("epochs.csv")).unwrap();
        assert_eq!(epochs_csv.lines().count(), 1 + 4 * 3);
        for row in table {
            let head = std::fs::read(out_dir.join("heads").join(format!("{}.safetensors", id(row)))).unwrap();
            if row["workers"] == 2 {
                let twin = std::fs::read(
                    out_dir.join("heads").join(format!("{}.safetensors", row["same_as"].as_str().unwrap())),
                );
                assert_eq!(head, twin.unwrap());
            }
        }
        let text = stdout(&env.sweep(&["table"]));
        assert!(text.contains("2 job(s) differ from the job in `Same As` only in workers"), "{text}");
        assert!(text.contains("trained once, the result shared"), "{text}");
        // Run again (a second process), resumed: nothing is trained.
        for args in [vec!["-v", "run", file.to_str().unwrap()], vec!["-v", "resume", "--retry-failed"]] {
            let out = env.sweep(&args);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stderr(&out).matches("job started").count(), 0, "{}", stderr(&out));
        }
        let epochs: i64 = db.query_row("SELECT count(*) FROM epochs", [], |r| r.get(0)).unwrap();
        assert_eq!(epochs, 2 * 3);
    }
}

#[test]
fn hyperband_brackets_start_their_rungs_later_and_compare_within() {
    let env = Env::new();
    let file = env.write("hb.toml", &trials("\n[prune]\nmethod = \"asha\"\nmin_epochs = 1\neta = 3\nbrackets = 2\n"));
    let plan = json(&env.sweep(&["plan", file.to_str().unwrap(), "--format", "json"]));
    let order: Vec<String> = rows(&plan).iter().map(|r| id(r).to_owned()).collect();
    let got = run(&env, file.to_str().unwrap(), "hb.db");
    let mut pruned = [0, 0];
    for row in rows(&got["table"]) {
        let bracket = order.iter().position(|o| o == id(row)).unwrap() % 2;
        if row["status"] == "pruned" {
            pruned[bracket] += 1;
            // Bracket 0: rungs at 1 and 3 epochs; bracket 1: at 3 (then 9, the last).
            let (at, rung) = (row["prune_epoch"].as_i64().unwrap(), row["prune_rung"].as_i64().unwrap());
            match bracket {
                0 => assert!(matches!((at, rung), (1, 0) | (3, 1)), "{row}"),
                _ => assert_eq!((at, rung), (3, 0), "{row}"),
            }
        } else {
            assert_eq!(row["status"], "done", "{row}");
        }
    }
    assert!(pruned[0] > 0 && pruned[1] > 0, "{pruned:?}");
}

/// Issue 12: a job equal to one trained already but for fewer epochs takes
/// that job's first epochs, its best among them and that epoch's head,
/// rather than train, when the longer job's best epoch is among them (else
/// the head to export would be missing, and it trains); it equals the same
/// job trained alone, head included.
#[test]
fn a_shorter_job_takes_the_first_epochs_of_a_trained_longer_one() {
    let env = Env::new();
    let file = |name: &str, epochs: &str| {
        env.write(
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n{HEAD}\n[train]\nbatch_size = 8\nlr = 0.05\n\n[grid]\nepochs = {epochs}\n"),
        )
    };
    let long = file("long", "[6]");
    let out = env.sweep(&["run", long.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let best = rows(&results(&env, &env.path("sweep.db"))["table"])[0]["best_epoch"].as_u64().unwrap();
    assert!((2..6).contains(&best), "the test wants a best epoch before the last, after the first: {best}");

    // 1 epoch is before the best: that job trains; `best` epochs is taken.
    let both = file("both", &format!("[6, {best}, 1]"));
    let out = env.sweep(&["-v", "run", both.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("takes the first epochs of a job with more epochs").count(), 1, "{err}");
    assert_eq!(err.lines().filter(|l| is_epoch_line(l)).count(), 1, "only the 1-epoch job trains:\n{err}");

    let alone = file("alone", &format!("[{best}]"));
    let db = env.path("alone.db");
    let out = env.sweep(&["--db", db.to_str().unwrap(), "run", alone.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (got, reference) = (results(&env, &env.path("sweep.db")), results(&env, &db));
    let row = rows(&reference["table"])[0].clone();
    let taken = rows(&got["table"]).iter().find(|r| r["job_id"] == row["job_id"]).unwrap().clone();
    for key in ["status", "best_valid_acc", "best_epoch", "final_train_acc", "best_valid_loss", "epochs_done"] {
        assert_eq!(taken[key], row[key], "{key}: {taken}");
    }
    assert_eq!(got["epochs"][id(&row)], reference["epochs"][id(&row)]);
    // The same best head: its header (metadata in any order) and every byte of its tensors.
    let head = |db: &std::path::Path, sweep: &str, dir: &str| {
        let out = env.sweep(&["--db", db.to_str().unwrap(), "export", sweep, "--out", dir]);
        assert!(out.status.success(), "{}", stderr(&out));
        let bytes = std::fs::read(env.path(dir).join("heads").join(format!("{}.safetensors", id(&row)))).unwrap();
        let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (serde_json::from_slice::<Value>(&bytes[8..n]).unwrap(), bytes[n..].to_vec())
    };
    let (taken, trained) = (head(&env.path("sweep.db"), "both", "taken"), head(&db, "alone", "trained"));
    assert_eq!(taken.0, trained.0);
    assert!(taken.1 == trained.1, "the heads' tensors differ");
}

/// Issue 12: a job equal to another but for more epochs starts where the
/// shorter one ended, and its epochs equal those of the job trained alone:
/// with two job slots, and the longer jobs first in the file, the shorter
/// ones are still trained first and the longer ones continue them.
#[test]
fn a_longer_job_continues_a_done_shorter_one() {
    let env = Env::new();
    let grid = |epochs: &str| {
        format!("name = \"e\"\n{HEAD}\n[train]\nbatch_size = 8\n\n[grid]\nepochs = {epochs}\nlr = [0.01, 0.05]\n")
    };
    let both = env.write("both.toml", &grid("[5, 2]"));
    let out = env.sweep(&["-v", "run", both.to_str().unwrap(), "--parallel", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("continues a done job with fewer epochs").count(), 2, "{err}");
    // 2 + 2 epochs, then 3 + 3: 10 trained, not 14.
    let trained = err.lines().filter(|l| crate::resume::is_epoch_line(l)).count();
    assert_eq!(trained, 10, "{err}");
    // The longer jobs equal the same jobs run alone, epoch for epoch.
    let alone = env.write("alone.toml", &grid("[5]"));
    let db = env.path("alone.db");
    let out = env.sweep(&["--db", db.to_str().unwrap(), "run", alone.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (got, reference) = (results(&env, &env.path("sweep.db")), results(&env, &db));
    let long: Vec<&Value> = rows(&got["table"]).iter().filter(|r| r["epochs"] == 5).collect();
    assert_eq!(long.len(), 2);
    for row in long {
        let alone_row = rows(&reference["table"]).iter().find(|r| r["job_id"] == row["job_id"]).unwrap();
        for key in ["status", "best_valid_acc", "best_epoch", "final_train_acc", "best_valid_loss", "epochs_done"] {
            assert_eq!(row[key], alone_row[key], "{key}: {row}");
        }
        assert_eq!(got["epochs"][id(row)], reference["epochs"][id(row)], "{row}");
    }
}
