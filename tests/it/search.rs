//! Search (issue 12): sampled spaces through the CLI: deterministic trials
//! and ids, more trials reusing the first, errors at once with their lines,
//! the objective ranking the table, `sweep best` pasted back, and every
//! setting that varies visible.

use crate::{json, stderr, stdout, Env};

/// Small generated data and backbone: each job is a head on 36 images.
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

fn random_search(name: &str, method: &str, trials: u32) -> String {
    format!(
        "name = \"{name}\"\n{HEAD}\n[search]\nmethod = \"{method}\"\ntrials = {trials}\nseed = 3\n\n[space]\n\
         lr = {{ log_uniform = [1e-3, 0.3] }}\nmomentum = {{ uniform = [0.5, 0.95] }}\n\
         weight_decay = {{ log_uniform = [1e-6, 1e-2], zero_probability = 0.25 }}\n\
         batch_size = {{ choice = [8, 16] }}\nepochs = 2\n"
    )
}

fn ids(rows: &serde_json::Value) -> Vec<String> {
    rows.as_array().unwrap().iter().map(|r| r["job_id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn search_plans_are_deterministic_and_more_trials_keep_the_first() {
    let env = Env::new();
    for method in ["random", "sobol"] {
        let a = env.write("a.toml", &random_search("s", method, 16));
        let first = env.sweep(&["plan", a.to_str().unwrap(), "--format", "json"]);
        assert!(first.status.success(), "{}", stderr(&first));
        let again = env.sweep(&["plan", a.to_str().unwrap(), "--format", "json"]);
        let (first, again) = (json(&first), json(&again));
        assert_eq!(first, again, "{method}: two plans of one file differ");
        let trials: Vec<i64> = first.as_array().unwrap().iter().map(|r| r["trial"].as_i64().unwrap()).collect();
        assert_eq!(trials, (0..16).collect::<Vec<_>>(), "{method}");
        let b = env.write("b.toml", &random_search("s", method, 32));
        let more = json(&env.sweep(&["plan", b.to_str().unwrap(), "--format", "json"]));
        assert_eq!(more.as_array().unwrap().len(), 32, "{method}");
        assert_eq!(ids(&more)[..16], ids(&first)[..], "{method}: the first 16 trials changed");
        // The sampled values are in their ranges, and in the table form a Trial column.
        for row in more.as_array().unwrap() {
            let lr = row["lr"].as_f64().unwrap();
            assert!((1e-3..=0.3).contains(&lr), "{row}");
            assert!([8, 16].contains(&row["batch_size"].as_i64().unwrap()), "{row}");
        }
        let text = stdout(&env.sweep(&["plan", b.to_str().unwrap()]));
        assert!(text.lines().next().unwrap().split_whitespace().any(|h| h == "Trial"), "{text}");
    }
}

#[test]
fn more_trials_reuse_the_trained_ones() {
    let env = Env::new();
    let small = env.write("small.toml", &random_search("grow", "random", 16));
    let out = env.sweep(&["-v", "run", small.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = json(&out);
    assert_eq!(first.as_array().unwrap().len(), 16);
    assert_eq!(stderr(&out).matches("job started").count(), 16, "{}", stderr(&out));

    let big = env.write("big.toml", &random_search("grow", "random", 32));
    let out = env.sweep(&["-v", "run", big.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Only the 16 new trials trained; the first 16 kept their results.
    assert_eq!(stderr(&out).matches("job started").count(), 16, "{}", stderr(&out));
    let second = json(&out);
    let rows = second.as_array().unwrap();
    assert_eq!(rows.len(), 32);
    assert!(rows.iter().all(|r| r["status"] == "done"), "{second}");
    for old in first.as_array().unwrap() {
        let new = rows.iter().find(|r| r["job_id"] == old["job_id"]).expect("an old trial is in the new sweep");
        assert_eq!((&new["seconds"], &new["best_valid_acc"]), (&old["seconds"], &old["best_valid_acc"]));
    }
}

#[test]
fn every_error_of_a_space_is_reported_at_once_with_its_line() {
    let env = Env::new();
    let src = format!(
        "name = \"bad\"\n{HEAD}\n[search]\nmethod = \"random\"\ntrials = 0\n[space]\n\
         lr = {{ log_uniform = [0, 0.1] }}\nmomentum = {{ uniform = [0.9, 0.5] }}\n\
         gamma = {{ beta = [1, 2] }}\nepochs = {{ int_uniform = [2, 2] }}\n\
         step_size = {{ int_uniform = [1, 9], step = 0 }}\n"
    );
    let file = env.write("bad.toml", &src);
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let line = |text: &str| src.lines().position(|l| l.starts_with(text)).unwrap() + 1;
    for (at, key, what) in [
        (line("trials"), "search.trials", "must be between 1 and 1000000, got 0"),
        (line("lr ="), "space.lr.log_uniform[0]", "must be > 0, got 0"),
        (line("momentum"), "space.momentum.uniform", "low > high: 0.9 > 0.5"),
        (line("gamma"), "space.gamma.beta", "unknown key"),
        (line("epochs"), "space.epochs.int_uniform", "an empty range: 2 to 2"),
        (line("step_size"), "space.step_size.step", "must be >= 1, got 0"),
    ] {
        let want = format!("bad.toml:{at}: {key}: {what}");
        assert!(err.lines().any(|l| l.ends_with(&want)), "no `{want}` in:\n{err}");
    }
    // `sweep run` refuses it the same way, before anything is recorded.
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(json(&env.sweep(&["status", "--format", "json"])), serde_json::json!([]));
}

#[test]
fn the_table_ranks_by_the_objective_and_best_pastes_back_to_the_same_job() {
    let env = Env::new();
    let src = random_search("by-loss", "sobol", 6).replace("seed = 3\n", "seed = 3\nobjective = \"valid_loss\"\n");
    let file = env.write("loss.toml", &src);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Sorted by the lowest valid loss, best first, by default.
    let rows = json(&env.sweep(&["table", "--format", "json"]));
    let losses: Vec<f64> = rows.as_array().unwrap().iter().map(|r| r["best_valid_loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 6);
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
    let text = stdout(&env.sweep(&["table"]));
    assert!(text.contains("Best Valid Loss") && text.contains("best first by valid_loss"), "{text}");
    // The best valid loss is each job's lowest epoch's.
    let best_id = rows[0]["job_id"].as_str().unwrap().to_owned();
    let epochs = json(&env.sweep(&["show", &best_id, "--format", "json"]));
    let lowest = epochs.as_array().unwrap().iter().map(|e| e["valid_loss"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    assert_eq!(lowest, losses[0]);

    // `sweep best`: JSON with the score, and a [train] section that plans the same job.
    let best = json(&env.sweep(&["best", "--format", "json"]));
    assert_eq!((best["job_id"].as_str(), best["objective"].as_str()), (Some(best_id.as_str()), Some("valid_loss")));
    assert_eq!(best["score"].as_f64(), Some(losses[0]));
    let out = env.sweep(&["best", "by-loss"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let section = stdout(&out);
    assert!(section.contains("# score: valid_loss = ") && section.contains("\n[train]\nbatch_size = "), "{section}");
    // Every train key, in the sweep file's order.
    let keys: Vec<&str> =
        section.lines().skip_while(|l| *l != "[train]").skip(1).map(|l| l.split(" = ").next().unwrap()).collect();
    let order = [
        "batch_size",
        "workers",
        "lr",
        "momentum",
        "epochs",
        "optimizer",
        "weight_decay",
        "step_size",
        "gamma",
        "seed",
        "loss",
    ];
    assert_eq!(keys, order, "{section}");
    let pasted = env.write("pasted.toml", &format!("name = \"pasted\"\n{HEAD}\n{section}"));
    let plan = env.sweep(&["plan", pasted.to_str().unwrap(), "--format", "json"]);
    assert!(plan.status.success(), "{}\n{section}", stderr(&plan));
    assert_eq!(ids(&json(&plan)), [best_id]);
}

#[test]
fn every_setting_that_varies_is_a_column_and_exports_hold_them_all() {
    let env = Env::new();
    let src = format!(
        "name = \"wd\"\n{HEAD}\n[train]\nbatch_size = 8\nepochs = 2\n\n[grid]\nweight_decay = [0.0, 0.01]\nseed = [0, 1]\n"
    );
    let file = env.write("wd.toml", &src);
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().nth(1).unwrap_or_default();
    for heading in ["weight_decay", "seed"] {
        assert!(header.split_whitespace().any(|h| h == heading), "no `{heading}` column in:\n{text}");
    }
    // Settings that do not vary stay out of the text table.
    assert!(!header.split_whitespace().any(|h| h == "gamma"), "{text}");
    // Four rows that no longer look alike.
    let rows: Vec<&str> = text.lines().skip(2).take(4).collect();
    let settings: std::collections::HashSet<String> =
        rows.iter().map(|r| r.split_whitespace().skip(1).take(7).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(settings.len(), 4, "{text}");

    // CSV and JSON: every train key, always.
    let csv = stdout(&env.sweep(&["table", "--format", "csv"]));
    let csv_header = csv.lines().next().unwrap();
    for key in ["optimizer", "weight_decay", "step_size", "gamma", "seed", "loss", "best_valid_loss", "best_train_loss"]
    {
        assert!(csv_header.split(',').any(|h| h == key), "no `{key}` in {csv_header}");
    }
    let rows = json(&env.sweep(&["table", "--format", "json"]));
    assert_eq!(rows[0]["gamma"], 0.1);
    // Sorting by any setting; plotting against any key.
    let sorted = json(&env.sweep(&["table", "--format", "json", "--sort", "weight_decay"]));
    let wd: Vec<f64> = sorted.as_array().unwrap().iter().map(|r| r["weight_decay"].as_f64().unwrap()).collect();
    assert_eq!(wd, [0.0, 0.0, 0.01, 0.01]);
    let png = env.path("wd.png");
    let out = env.sweep(&["plot", "--by", "weight_decay", "--out", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}
