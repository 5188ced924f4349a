//! Fused heads (issue 12) through the CLI: trials that see the same
//! mini-batches train as one group (`--fuse`) and give the epoch rows they
//! give alone (`--no-fuse`): accuracies and learning rates identical, losses
//! to float32 rounding; with ASHA, heads leave the group as they are pruned
//! and the best trial of the full run stays alive.

use serde_json::Value;

use crate::resume::{results, Runner};
use crate::{stderr, Env};

/// The largest relative difference allowed between a loss trained fused and
/// alone: the products' summation order differs with their shapes. Measured
/// on this test's trials: at most 9.5e-7 on a CPU (`SWEEP_FUSED_REPORT=1` prints it).
const LOSS_TOLERANCE: f64 = 1e-5;

/// 12 random trials crossed with 2 batch sizes and 2 losses: 48 jobs in 4
/// groups, every hyperparameter a group's heads do not share sampled, over
/// 7 epochs with a StepLR step inside.
fn trials(prune: &str) -> String {
    format!(
        "name = \"fused\"\n{}\n[search]\nmethod = \"random\"\ntrials = 12\nseed = 4\n\n[space]\n\
         lr = {{ log_uniform = [1e-4, 0.1] }}\nmomentum = {{ uniform = [0.0, 0.95] }}\n\
         weight_decay = {{ log_uniform = [1e-6, 1e-2], zero_probability = 0.25 }}\n\
         batch_size = [8, 16]\nloss = [\"cross_entropy\", \"multi_margin\"]\nstep_size = 4\ngamma = 0.5\nepochs = 7\n{prune}",
        crate::prune::TRIAL_HEAD
    )
}

/// Runs `file` into database `db` with `flags`; its results, and how many
/// heads each fused group started with (from `-v`'s log).
fn run(env: &Env, file: &str, db: &str, flags: &[&str]) -> (Value, Vec<usize>) {
    let db = env.path(db);
    let mut args = vec!["--db", db.to_str().unwrap(), "-v", "run", file];
    args.extend_from_slice(flags);
    let out = env.sweep(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let groups = stderr(&out)
        .lines()
        .filter(|l| l.contains("fused heads started"))
        .map(|l| l.split("heads=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (results(env, &db), groups)
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// Epoch rows `a` (fused) and `b` (alone) of one job agree: every field
/// equal but the losses, which agree to [`LOSS_TOLERANCE`]. Returns the
/// largest relative loss difference.
fn same_epochs(job: &str, a: &[Value], b: &[Value]) -> f64 {
    assert_eq!(a.len(), b.len(), "{job}: {} epochs fused, {} alone", a.len(), b.len());
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
        assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{job}");
        for (key, value) in x {
            if key.ends_with("loss") {
                let (p, q) = (value.as_f64().unwrap(), y[key].as_f64().unwrap());
                let rel = (p - q).abs() / q.abs().max(1e-12);
                assert!(rel <= LOSS_TOLERANCE, "{job}: {key} {p} fused, {q} alone");
                worst = worst.max(rel);
            } else {
                assert_eq!(value, &y[key], "{job}: {key} differs: {x:?} fused, {y:?} alone");
            }
        }
    }
    worst
}

#[test]
fn fused_and_alone_give_the_same_epoch_rows() {
    let env = Env::new();
    let file = env.write("fused.toml", &trials(""));
    let file = file.to_str().unwrap();
    let (alone, groups) = run(&env, file, "alone.db", &["--no-fuse"]);
    assert!(groups.is_empty(), "--no-fuse trained fused groups: {groups:?}");
    let (fused, groups) = run(&env, file, "fused.db", &["--fuse", "--parallel", "1"]);
    // One group per batch size and loss, each all its trials.
    assert_eq!(groups, [12, 12, 12, 12]);

    let (table, reference) = (rows(&fused["table"]), rows(&alone["table"]));
    assert_eq!(table.len(), 48);
    let mut worst = 0f64;
    for (row, other) in table.iter().zip(reference) {
        let job = row["job_id"].as_str().unwrap();
        // The same ranking, and every column of the table the same.
        assert_eq!(row["job_id"], other["job_id"]);
        for key in ["status", "epochs_done", "best_valid_acc", "best_epoch", "lr", "momentum", "weight_decay"] {
            assert_eq!(row[key], other[key], "{job}: {key}");
        }
        assert_eq!(row["status"], "done", "{row}");
        worst = worst.max(same_epochs(job, rows(&fused["epochs"][job]), rows(&alone["epochs"][job])));
    }
    if std::env::var_os("SWEEP_FUSED_REPORT").is_some() {
        eprintln!("largest relative loss difference, fused vs alone: {worst:.2e}");
    }
}

#[test]
fn fused_heads_leave_the_group_when_asha_prunes_them() {
    let env = Env::new();
    let (full, _) = run(&env, env.write("full.toml", &trials("")).to_str().unwrap(), "full.db", &["--no-fuse"]);
    let asha = trials("\n[prune]\nmethod = \"asha\"\nmin_epochs = 1\neta = 3\n");
    let file = env.write("asha.toml", &asha);
    let (got, groups) = run(&env, file.to_str().unwrap(), "asha.db", &["--fuse", "--parallel", "1"]);
    assert!(groups.iter().any(|&k| k > 1), "{groups:?}");
    let table = rows(&got["table"]);
    let statuses: Vec<&str> = table.iter().map(|r| r["status"].as_str().unwrap()).collect();
    let pruned = statuses.iter().filter(|s| **s == "pruned").count();
    assert!(pruned > 0 && pruned < 48, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == "done" || *s == "pruned"), "{statuses:?}");
    // The full run's best is not pruned, and is the best here.
    let best = rows(&full["table"])[0]["job_id"].as_str().unwrap();
    assert_eq!(table[0]["job_id"], best, "{statuses:?}");
    assert_eq!(table[0]["status"], "done");
    for row in table {
        let job = row["job_id"].as_str().unwrap();
        let epochs = rows(&got["epochs"][job]);
        let done = row["epochs_done"].as_u64().unwrap() as usize;
        assert_eq!(epochs.len(), done, "{row}");
        if row["status"] == "pruned" {
            // Stopped at a rung (epochs 1 and 3), its epochs those of the full run.
            assert!(matches!(done, 1 | 3), "{row}");
        }
        same_epochs(job, epochs, &rows(&full["epochs"][job])[..done]);
    }
}

/// Slow epochs (one sample a batch, 900 an epoch), and many, for a Ctrl-C in
/// the middle of a group.
const LONG: &str = r#"
name = "long-fused"

[data]
layout = "synthetic"
classes = 4
images = 1200
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
weight_decay = 0.001

[grid]
lr = [0.0001, 0.001, 0.01, 0.05]
momentum = [0.0, 0.9]
"#;

/// Ctrl-C in the middle of a group's second epoch: every head stops at its
/// last recorded epoch, and `sweep resume --fuse` finishes them (in groups
/// by the epoch each is at) with the epoch rows of an uninterrupted run.
#[test]
fn a_fused_sweep_stopped_by_ctrl_c_resumes_to_the_uninterrupted_rows() {
    let env = Env::new();
    let file = env.write("long.toml", LONG);
    let file = file.to_str().unwrap();
    let (reference, groups) = run(&env, file, "reference.db", &["--fuse", "--parallel", "1"]);
    assert_eq!(groups, [8]);

    let mut runner = Runner::spawn(&env, &["run", file, "--fuse", "--parallel", "1"]);
    assert!(runner.wait_epochs(12), "the sweep ended before 12 epochs:\n{}", runner.seen.join("\n"));
    runner.interrupt();
    let (status, _, lines) = runner.finish();
    assert_eq!(status.code(), Some(130), "{}", lines.join("\n"));
    let partial = results(&env, &env.path("sweep.db"));
    let table = rows(&partial["table"]);
    let done: Vec<u64> = table.iter().map(|r| r["epochs_done"].as_u64().unwrap()).collect();
    assert!(done.iter().all(|&d| (1..12).contains(&d)), "the Ctrl-C came too late: {done:?}");
    assert!(table.iter().all(|r| r["status"] == "interrupted"), "{partial}");

    let out = env.sweep(&["-v", "resume", "--fuse", "--parallel", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("fused heads started"), "{}", stderr(&out));
    let got = results(&env, &env.path("sweep.db"));
    let (table, reference_table) = (rows(&got["table"]), rows(&reference["table"]));
    assert_eq!(table.len(), 8);
    for (row, other) in table.iter().zip(reference_table) {
        let job = row["job_id"].as_str().unwrap();
        assert_eq!(row["job_id"], other["job_id"]);
        for key in ["status", "epochs_done", "best_valid_acc", "best_epoch"] {
            assert_eq!(row[key], other[key], "{job}: {key}");
        }
        same_epochs(job, rows(&got["epochs"][job]), rows(&reference["epochs"][job]));
    }
}
