//! Your own data and weights (issue 18): the split made visible (`sweep
//! split`) and portable (`[data] split`), pandas' split reproduced, the
//! normalisation a weights file declares used or checked, fractions, and
//! `sweep plan` checking what it can before any work.

use std::path::{Path, PathBuf};
use std::process::Output;

use sweep_worker::{synthetic_image, SyntheticConfig};

use crate::{json, stderr, stdout, Env};

const BREEDS: [&str; 3] = ["beagle", "pug", "whippet"];

/// `dogs/labels.csv` and `dogs/train/<id>.jpg`: 12 generated JPEGs.
pub(crate) fn dogs(env: &Env) {
    let root = env.path("dogs");
    std::fs::create_dir_all(root.join("train")).expect("mkdir");
    let cfg = SyntheticConfig { classes: 3, images: 12, width: 40, height: 40, seed: 11 };
    let mut csv = String::from("id,breed\n");
    for i in 0..12 {
        synthetic_image(&cfg, i).save(root.join("train").join(format!("{}.jpg", id(i)))).expect("write an image");
        csv.push_str(&format!("{},{}\n", id(i), BREEDS[i % 3]));
    }
    std::fs::write(root.join("labels.csv"), csv).expect("write labels.csv");
}

fn id(i: usize) -> String {
    format!("dog{i:02}")
}

/// A sweep file over `dogs/` with `data` and `model` lines added.
pub(crate) fn sweep_file(env: &Env, name: &str, data: &str, model: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\n\n[data]\nlayout = \"kaggle\"\nroot = \"dogs\"\n{data}\n\n[model]\nbackbone = \
         \"resnet18\"\nimage_size = 32\n{model}\n\n[train]\nbatch_size = 4\nepochs = 3\nlr = 0.05\n"
    );
    env.write(&format!("{name}.toml"), &text)
}

fn run(env: &Env, file: &Path) -> Output {
    env.sweep(&["run", file.to_str().expect("utf-8"), "--format", "json"])
}

/// The `status --format json` row of sweep `name`.
fn status_of(env: &Env, name: &str) -> serde_json::Value {
    let status = json(&env.sweep(&["status", "--format", "json"]));
    status.as_array().expect("rows").iter().find(|r| r["name"] == name).cloned().expect("the sweep's row")
}

pub(crate) fn no_sweep_recorded(env: &Env) {
    let status = env.sweep(&["status", "--format", "json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(json(&status), serde_json::json!([]), "nothing may be recorded");
}

/// The one `error:` line of a refused command.
pub(crate) fn error_line(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_owned()
}

#[test]
fn a_split_written_by_sweep_split_gives_the_same_split_and_results() {
    let env = Env::new();
    dogs(&env);
    let first = sweep_file(&env, "first", "valid_fraction = 0.25\nsplit_seed = 7", r#"weights = "random""#);
    let out = run(&env, &first);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    // Each job's total cost: its head seconds and its share of the backbone pass.
    let (seconds, total) = (rows[0]["seconds"].as_f64().unwrap(), rows[0]["total_seconds"].as_f64().unwrap());
    assert!(total > seconds, "{rows}");

    let out = env.sweep(&["split", "first", "--out", "split.csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = std::fs::read_to_string(env.path("split.csv")).expect("split.csv written");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,set");
    assert_eq!(lines.len(), 13, "{csv}");
    assert_eq!(lines.iter().filter(|l| l.ends_with(",valid")).count(), 3, "{csv}");
    assert!(lines[1..].iter().enumerate().all(|(i, l)| l.starts_with(&format!("{},", id(i)))), "{csv}");

    let second = sweep_file(&env, "second", r#"split = "split.csv""#, r#"weights = "random""#);
    let out2 = run(&env, &second);
    assert!(out2.status.success(), "{}", stderr(&out2));
    assert!(stderr(&out2).contains("split: 9 train, 3 valid (from "), "{}", stderr(&out2));
    let (a, b) = (status_of(&env, "first"), status_of(&env, "second"));
    assert_eq!(a["split"]["hash"], b["split"]["hash"], "{a}\n{b}");
    assert_eq!((a["split"]["train"].as_u64(), a["split"]["valid"].as_u64()), (Some(9), Some(3)));
    assert!(b["split"]["file"].as_str().unwrap().ends_with("split.csv"), "{b}");
    let rows2 = json(&out2);
    assert_ne!(rows[0]["job_id"], rows2[0]["job_id"], "a split file is part of the job's id");
    assert_eq!(rows[0]["best_valid_acc"], rows2[0]["best_valid_acc"]);
    assert_eq!(rows[0]["final_train_acc"], rows2[0]["final_train_acc"]);
    // The epochs themselves are the same.
    let epochs = |job: &serde_json::Value| {
        let shown = json(&env.sweep(&["show", job.as_str().unwrap(), "--format", "json"]));
        shown.as_array().unwrap().iter().map(|e| (e["train_loss"].clone(), e["valid_loss"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(epochs(&rows[0]["job_id"]), epochs(&rows2[0]["job_id"]));
    // The table and `sweep status` show the split.
    let table = stdout(&env.sweep(&["table", "second"]));
    let hash = b["split"]["hash"].as_str().unwrap();
    assert!(table.contains("split: 9 train, 3 valid (file "), "{table}");
    assert!(table.contains(hash), "{table}");
    let status = stdout(&env.sweep(&["status"]));
    assert!(status.contains(&format!("9/3 {hash}")), "{status}");
    // `sweep split` of the second sweep writes the file it was given.
    let again = env.sweep(&["split", "second"]);
    assert_eq!(stdout(&again), csv);
}

#[test]
fn a_bad_split_file_is_refused_naming_the_file_and_row_before_anything_is_recorded() {
    let env = Env::new();
    dogs(&env);
    let file = sweep_file(&env, "bad", r#"split = "split.csv""#, r#"weights = "random""#);
    let rows: String = (0..12).map(|i| format!("{},{}\n", id(i), if i < 9 { "train" } else { "valid" })).collect();
    let path = env.path("split.csv").display().to_string();
    let cases = [
        (
            format!("id,set\n{rows}dog99,train\n"),
            format!("error: {path}:14: unknown id `dog99`: no image of the data set has it"),
        ),
        (format!("id,set\n{rows}dog03,valid\n"), format!("error: {path}:14: duplicate id `dog03` (first on line 5)")),
        (
            format!("id,set\n{}", rows.replace("dog04,train", "dog04,test")),
            format!("error: {path}:6: set must be `train` or `valid`, got `test`"),
        ),
        (
            format!("id,set\n{}", rows.replace("dog05,train\n", "")),
            format!("error: {path}: 1 of the data set's 12 images missing, the first `dog05`: every image needs a row"),
        ),
    ];
    for (text, want) in cases {
        env.write("split.csv", &text);
        let out = run(&env, &file);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(error_line(&out), want);
        no_sweep_recorded(&env);
    }
    // Split keys that do not apply beside a split file are refused as bad input.
    let both = sweep_file(&env, "both", "split = \"split.csv\"\nvalid_fraction = 0.2", r#"weights = "random""#);
    let out = run(&env, &both);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("data.split: valid_fraction does not apply with split"), "{}", stderr(&out));
}

/// pandas' `df.sample(frac=0.75, random_state=42)` over 12 rows takes rows
/// 10 9 0 8 5 2 1 11 4 (crates/worker/tests/fixtures/pandas-split.txt):
/// valid is 3, 6 and 7.
#[test]
fn split_method_pandas_validates_the_rows_pandas_leaves_out() {
    let env = Env::new();
    dogs(&env);
    let file = sweep_file(
        &env,
        "pandas",
        "valid_fraction = 0.25\nsplit_seed = 42\nsplit_method = \"pandas\"",
        r#"weights = "random""#,
    );
    let out = run(&env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.sweep(&["split"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let valid: Vec<String> = stdout(&out).lines().filter_map(|l| l.strip_suffix(",valid")).map(str::to_owned).collect();
    assert_eq!(valid, [id(3), id(6), id(7)]);
    assert_eq!(status_of(&env, "pandas")["split"]["method"], "pandas");
}

/// A ResNet-18 safetensors file of seeded random weights (torchvision's
/// init) with `metadata` in its header.
pub(crate) fn weights_with_metadata(path: &Path, metadata: &[(&str, &str)]) {
    let tensors = sweep_worker::random_weights(sweep_worker::Arch::Resnet18, 3).expect("weights");
    write_safetensors(path, &tensors, metadata);
}

/// `tensors` written as a safetensors file (f32) with `metadata` in its header.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &std::collections::HashMap<String, sweep_worker::Tensor>,
    metadata: &[(&str, &str)],
) {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut header = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> =
        metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
    header.insert("__metadata__".into(), meta.into());
    let mut data = Vec::new();
    for name in names {
        let t = &tensors[name];
        let values: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).expect("values");
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": t.dims(), "data_offsets": [start, data.len()] }),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    std::fs::write(path, bytes).expect("write the weights");
}

#[test]
fn the_normalisation_a_weights_file_declares_is_used_or_checked() {
    let env = Env::new();
    dogs(&env);
    let weights = env.path("caffe.safetensors");
    weights_with_metadata(&weights, &[("arch", "resnet18"), ("mean", "[0.5, 0.5, 0.5]"), ("std", "1/4,1/4,1/4")]);

    // Set to something else in the sweep file: refused, one line, nothing recorded.
    let wrong = sweep_file(
        &env,
        "wrong",
        "",
        "weights = \"caffe.safetensors\"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]",
    );
    for command in ["run", "plan"] {
        let out = env.sweep(&[command, wrong.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            error_line(&out),
            format!(
                "error: {}: its metadata declares mean [0.5, 0.5, 0.5] but [model] sets mean = [0.485, 0.456, 0.406]: \
                 leave `mean` out of [model] to use the file's, or set `ignore_weights_metadata = true` in [model] \
                 to keep yours",
                weights.display()
            )
        );
    }
    no_sweep_recorded(&env);
    // A backbone other than the declared one.
    let arch = sweep_file(&env, "arch", "", "weights = \"caffe.safetensors\"").to_str().unwrap().to_owned();
    std::fs::write(&arch, std::fs::read_to_string(&arch).unwrap().replace("resnet18", "resnet34")).unwrap();
    let out = env.sweep(&["run", &arch]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        error_line(&out).contains("its metadata declares backbone resnet18 but [model] sets backbone = \"resnet34\"")
    );
    no_sweep_recorded(&env);

    // Left out: the file's values are used, and the run says so.
    let used = sweep_file(&env, "used", "", "weights = \"caffe.safetensors\"");
    let out = env.sweep(&["run", used.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "backbone resnet18, mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25] (mean, std from the weights file's \
             metadata)"
        ),
        "{}",
        stderr(&out)
    );
    // Overridden: the sweep file's values, the metadata ignored.
    let ignored = sweep_file(
        &env,
        "ignored",
        "",
        "weights = \"caffe.safetensors\"\nstd = [\"1/2\", \"1/2\", \"1/2\"]\nignore_weights_metadata = true",
    );
    let out = env.sweep(&["run", ignored.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("mean [0.485, 0.456, 0.406], std [0.5, 0.5, 0.5]\n"), "{}", stderr(&out));
}

#[test]
fn fractions_in_quotes_are_taken_and_a_bare_fraction_says_what_to_write() {
    let env = Env::new();
    dogs(&env);
    let file = sweep_file(&env, "frac", "", "weights = \"random\"\nstd = [\"1/255\", \"1/255\", \"1/255\"]");
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("std [0.003922, 0.003922, 0.003922]"), "{}", stderr(&out));
    let bare = sweep_file(&env, "bare", "", "weights = \"random\"\nstd = [1/255, 1/255, 1/255]");
    let out = env.sweep(&["plan", bare.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("with the fractions in quotes (\"1/255\")"), "{}", stderr(&out));
}

#[test]
fn plan_checks_the_data_the_weights_the_split_and_the_cache_without_computing() {
    let env = Env::new();
    dogs(&env);
    let file = sweep_file(&env, "plan", "valid_fraction = 0.25", r#"weights = "random""#);
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for line in [
        "data: 12 images in 3 classes (kaggle)",
        "backbone resnet18, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]",
        "split: 9 train, 3 valid (seeded shuffle, seed 0), hash ",
        "features: 12 x 512 values, cached in ",
    ] {
        assert!(err.contains(line), "no `{line}` in {err}");
    }
    assert!(!env.path("sweep.db").exists() && !env.path("sweep-cache").exists(), "plan writes nothing");

    // The data folder missing: the labels file named.
    std::fs::rename(env.path("dogs"), env.path("elsewhere")).unwrap();
    let out = env.sweep(&["plan", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let labels = env.path("dogs").join("labels.csv");
    assert!(error_line(&out).starts_with(&format!("error: {}: cannot open: ", labels.display())), "{}", stderr(&out));
    // ...unless the checks are skipped.
    let out = env.sweep(&["plan", file.to_str().unwrap(), "--no-check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::rename(env.path("elsewhere"), env.path("dogs")).unwrap();

    // Weights that do not fit the backbone.
    let weights = sweep_file(&env, "w", "", "weights = \"missing.safetensors\"");
    let out = env.sweep(&["plan", weights.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out).contains("missing.safetensors: cannot open: "), "{}", stderr(&out));
    // A cache folder that is a file.
    env.write("cache", "not a folder");
    let out = env.sweep(&["plan", file.to_str().unwrap(), "--cache-dir", "cache"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(error_line(&out), "error: feature cache cache: not a folder");
}
