//! `sweep plan`: the jobs a sweep file expands to, nothing run (issue #2).

use crate::{json, stderr, stdout, Env};

/// lr x momentum, 2 x 2 jobs; the rest of [train] fixed.
const GRID_TOML: &str = r#"
name = "plan-grid"

[data]
layout = "synthetic"
classes = 3
images = 48

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 8
epochs = 3

[grid]
lr = [0.01, 0.1]
momentum = [0.0, 0.9]
"#;

/// The same sweep as JSON: other key order, other number spellings.
const GRID_JSON: &str = r#"{
  "grid": {"momentum": [0, 9e-1], "lr": [1e-2, 0.1]},
  "train": {"epochs": 3, "batch_size": 8},
  "model": {"image_size": 32, "weights": "random", "backbone": "resnet18"},
  "data": {"images": 48, "classes": 3, "layout": "synthetic"},
  "name": "plan-grid"
}"#;

const TRAIN_KEYS: [&str; 11] = [
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

#[test]
fn plan_lists_the_jobs_as_a_table_and_writes_nothing() {
    let env = Env::new();
    let file = env.write("grid.toml", GRID_TOML);
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().next().unwrap_or_default();
    for heading in ["Job", "batch_size", "workers", "lr", "momentum", "epochs"] {
        assert!(header.split_whitespace().any(|h| h == heading), "no `{heading}` in {header:?}");
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    assert_eq!(ids.len(), 4, "{text}");
    assert!(stderr(&out).contains("4 jobs in sweep `plan-grid`"), "{}", stderr(&out));
    assert!(!env.path("sweep.db").exists(), "plan writes no database");
}

#[test]
fn plan_json_has_every_train_key_in_expansion_order() {
    let env = Env::new();
    let file = env.write("grid.toml", GRID_TOML);
    let out = env.sweep(&["plan", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 4);
    for row in rows {
        let obj = row.as_object().expect("an object");
        assert!(obj["job_id"].as_str().is_some_and(|id| id.len() == 16), "{row}");
        for key in TRAIN_KEYS {
            assert!(obj.contains_key(key), "no `{key}` in {row}");
        }
        assert_eq!((&row["batch_size"], &row["epochs"], &row["workers"]), (&8.into(), &3.into(), &2.into()));
        assert_eq!((&row["optimizer"], &row["loss"]), (&"sgd".into(), &"cross_entropy".into()));
    }
    // lr comes before momentum in canonical order, so momentum varies fastest.
    let points: Vec<(f64, f64)> =
        rows.iter().map(|r| (r["lr"].as_f64().unwrap(), r["momentum"].as_f64().unwrap())).collect();
    assert_eq!(points, [(0.01, 0.0), (0.01, 0.9), (0.1, 0.0), (0.1, 0.9)]);
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r["job_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "job ids are unique");
}

#[test]
fn toml_and_json_renderings_plan_the_same_jobs() {
    let env = Env::new();
    let toml = env.write("grid.toml", GRID_TOML);
    let json_file = env.write("grid.json", GRID_JSON);
    let a = env.sweep(&["plan", toml.to_str().unwrap(), "--format", "json"]);
    let b = env.sweep(&["plan", json_file.to_str().unwrap(), "--format", "json"]);
    assert!(a.status.success() && b.status.success(), "{}{}", stderr(&a), stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn a_bad_file_exits_2_with_every_error_on_stderr() {
    let env = Env::new();
    let file = env.write(
        "bad.toml",
        "name = \"x\"\n[data]\nlayout = \"synthetic\"\nroot = \"imgs\"\n[model]\nweights = \"random\"\n[train]\nlr = \"fast\"\n[grid]\nmomentum = [0.9, 1.0]\nbatchsize = [8]\n",
    );
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let p = file.display();
    let expected = [
        format!("error: {p}:2: data.root: the synthetic layout generates its images and takes no root"),
        format!("error: {p}:8: train.lr: must be a number, got a string"),
        format!("error: {p}:10: grid.momentum[1]: must be >= 0 and < 1, got 1"),
        format!("error: {p}:11: grid.batchsize: unknown key (did you mean `batch_size`?)"),
    ];
    assert_eq!(stderr(&out).lines().collect::<Vec<_>>(), expected);

    let yaml = env.write("s.yaml", "name: x\n");
    let out = env.sweep(&["plan", yaml.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown sweep file extension: expected .toml or .json"), "{}", stderr(&out));
}

#[test]
fn a_grid_past_max_jobs_is_refused_with_its_count() {
    let env = Env::new();
    let file = env.write("grid.toml", GRID_TOML);
    let out = env.sweep(&["plan", file.to_str().unwrap(), "--max-jobs", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("expands to 4 jobs, more than the limit of 3"), "{}", stderr(&out));
    assert!(env.sweep(&["plan", file.to_str().unwrap(), "--max-jobs", "4"]).status.success());

    // The example grid of the README: 2 x 2 x 4 x 3 x 2.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/grid-example.toml");
    let out = env.sweep(&["plan", example.to_str().unwrap(), "--max-jobs", "95"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expands to 96 jobs, more than the limit of 95"), "{}", stderr(&out));
    // Its data is not here: only the expansion (issue 18: plan checks the data otherwise).
    let out = env.sweep(&["plan", example.to_str().unwrap(), "--format", "json", "--no-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out).as_array().map(Vec::len), Some(96));
}

#[test]
fn help_names_the_subcommands_and_plan_options() {
    let env = Env::new();
    let out = env.sweep(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for sub in ["run", "resume", "plan", "table", "show", "status"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(sub)), "no `{sub}` in:\n{text}");
    }
    let out = env.sweep(&["plan", "--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for option in ["<FILE>", "--format", "--max-jobs", "json"] {
        assert!(text.contains(option), "no `{option}` in:\n{text}");
    }
}

/// Issue 15: `sweep schema` prints exactly the committed schema, so editors
/// pointed at `sweeps/sweep.schema.json` check what this build accepts.
#[test]
fn schema_prints_the_committed_schema() {
    let env = Env::new();
    let out = env.sweep(&["schema"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps/sweep.schema.json");
    let committed = std::fs::read_to_string(committed).unwrap();
    assert!(
        out.stdout == committed.as_bytes(),
        "sweeps/sweep.schema.json is stale: run `sweep schema > sweeps/sweep.schema.json`"
    );
    let schema = json(&out);
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["train"].is_object(), "{schema}");
}

/// Issue 16: `--max-jobs` cannot be raised past the ceiling that keeps a
/// plan's memory bounded; the refusal is bad input, at once.
#[test]
fn max_jobs_past_the_ceiling_is_refused_as_bad_input() {
    let env = Env::new();
    let file =
        env.write("huge.toml", "name = \"huge\"\n[data]\nlayout = \"synthetic\"\n[model]\nweights = \"random\"\n");
    let out = env.sweep(&["plan", file.to_str().unwrap(), "--max-jobs", "10000000000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-jobs"), "{}", stderr(&out));
}
