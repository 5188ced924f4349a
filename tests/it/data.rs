//! Data sets end to end (issue #4): the kaggle and folder layouts on generated
//! JPEGs and PNGs; every bad input (a corrupt or missing image, a bad
//! `labels.csv` header, a duplicate id, an id leaving `train/`) stops the run
//! with one line naming the file (and its line, for the CSV) before any job
//! trains. The sweep and its pending jobs stay recorded, with no epochs.

use std::path::Path;

use sweep_worker::{synthetic_image, SyntheticConfig};

use crate::{json, stderr, Env};

const BREEDS: [&str; 3] = ["beagle", "pug", "whippet"];

/// Writes 12 generated images of 48x40 (landscape, three classes) to
/// `path(i)`, encoded as the extension says (JPEG or PNG).
fn save_images(path: impl Fn(usize) -> std::path::PathBuf) {
    let cfg = SyntheticConfig { classes: 3, images: 12, width: 48, height: 40, seed: 5 };
    for i in 0..12 {
        synthetic_image(&cfg, i).save(path(i)).expect("write an image");
    }
}

fn sweep_toml(layout: &str, root: &str) -> String {
    format!(
        r#"
name = "{layout}-e2e"

[data]
layout = "{layout}"
root = "{root}"
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 4
workers = 2
epochs = 2
"#
    )
}

/// `dogs/labels.csv` and `dogs/train/<id>.jpg` (real JPEGs), and the sweep file.
fn kaggle(env: &Env) -> std::path::PathBuf {
    let root = env.path("dogs");
    std::fs::create_dir_all(root.join("train")).expect("mkdir");
    save_images(|i| root.join("train").join(format!("{}.jpg", id(i))));
    let rows: String = (0..12).map(|i| format!("{},{}\n", id(i), BREEDS[i % 3])).collect();
    let csv = format!("id,breed\n{rows}");
    std::fs::write(root.join("labels.csv"), csv).expect("write labels.csv");
    env.write("dogs.toml", &sweep_toml("kaggle", "dogs"))
}

/// The `i`-th image's id, shaped like Kaggle's (32 hex digits).
fn id(i: usize) -> String {
    format!("{:032x}", i * 7919 + 1)
}

fn run(env: &Env, file: &Path) -> std::process::Output {
    env.sweep(&["run", file.to_str().expect("utf-8 path"), "--format", "json"])
}

#[test]
fn a_kaggle_folder_runs_end_to_end() {
    let env = Env::new();
    let file = kaggle(&env);
    let out = run(&env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["status"], "done");
    let acc = rows[0]["best_valid_acc"].as_f64().expect("an accuracy");
    assert!((0.0..=1.0).contains(&acc));
    let job = rows[0]["job_id"].as_str().expect("job id");
    let epochs = json(&env.sweep(&["show", job, "--format", "json"]));
    assert_eq!(epochs.as_array().map(Vec::len), Some(2), "{epochs}");
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!((status[0]["done"].as_i64(), status[0]["features"].as_str()), (Some(1), Some("computed")));
}

#[test]
fn a_folder_of_class_folders_runs_end_to_end() {
    let env = Env::new();
    for breed in BREEDS {
        std::fs::create_dir_all(env.path("pets").join(breed)).expect("mkdir");
    }
    // JPEGs and PNGs mixed, as ImageFolder takes them.
    save_images(|i| {
        let ext = if i % 2 == 0 { "jpg" } else { "png" };
        env.path("pets").join(BREEDS[i % 3]).join(format!("{i:02}.{ext}"))
    });
    std::fs::write(env.path("pets").join("README.txt"), "not an image, not a class").expect("write");
    let file = env.write("pets.toml", &sweep_toml("folder", "pets"));
    let out = run(&env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["status"], "done");
}

/// Runs the kaggle sweep after `spoil` damaged its data, and checks it failed
/// with exactly one error line that contains `want` (with `ROOT` for the data
/// folder), and that nothing was registered, computed or cached.
fn fails_before_training(spoil: impl FnOnce(&Path), want: &str) {
    let env = Env::new();
    let file = kaggle(&env);
    let root = env.path("dogs");
    spoil(&root);
    let out = run(&env, &file);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let want = want.replace("ROOT", &root.display().to_string());
    assert!(errors[0].contains(&want), "want `{want}` in\n{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Issue 18: found before anything is registered, so no sweep is left
    // with pending jobs by a failed start.
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status, serde_json::json!([]), "nothing is recorded: {status}");
    assert!(!env.path("sweep-cache").exists() || std::fs::read_dir(env.path("sweep-cache")).unwrap().count() == 0);
}

#[test]
fn a_corrupt_image_names_the_file() {
    fails_before_training(
        |root| std::fs::write(root.join("train").join(format!("{}.jpg", id(5))), b"\xff\xd8 not really").unwrap(),
        &format!("ROOT/train/{}.jpg: cannot decode image: ", id(5)),
    );
}

#[test]
fn a_truncated_image_names_the_file() {
    fails_before_training(
        |root| {
            let path = root.join("train").join(format!("{}.jpg", id(9)));
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        },
        &format!("ROOT/train/{}.jpg: cannot decode image: ", id(9)),
    );
}

#[test]
fn a_missing_image_names_the_file_and_the_csv_line() {
    fails_before_training(
        |root| std::fs::remove_file(root.join("train").join(format!("{}.jpg", id(3)))).unwrap(),
        &format!("ROOT/train/{}.jpg: missing image for id `{}` (labels.csv line 5)", id(3), id(3)),
    );
}

#[test]
fn a_bad_header_names_the_csv_line() {
    fails_before_training(
        |root| {
            let csv = std::fs::read_to_string(root.join("labels.csv")).unwrap();
            std::fs::write(root.join("labels.csv"), csv.replacen("id,breed", "id,label", 1)).unwrap();
        },
        "ROOT/labels.csv:1: the header must be `id,breed`, got `id,label`",
    );
}

#[test]
fn a_duplicate_id_names_both_lines() {
    fails_before_training(
        |root| {
            let mut csv = std::fs::read_to_string(root.join("labels.csv")).unwrap();
            csv.push_str(&format!("{},pug\n", id(2)));
            std::fs::write(root.join("labels.csv"), csv).unwrap();
        },
        &format!("ROOT/labels.csv:14: duplicate id `{}` (first on line 4)", id(2)),
    );
}

#[test]
fn an_id_leaving_train_is_refused() {
    fails_before_training(
        |root| {
            // The file it points at exists: the check is on the name, not on the file.
            std::fs::write(root.join("secret.jpg"), b"").unwrap();
            let csv = std::fs::read_to_string(root.join("labels.csv")).unwrap();
            std::fs::write(root.join("labels.csv"), format!("{csv}../secret,pug\n")).unwrap();
        },
        "ROOT/labels.csv:14: id `../secret` is not a plain file name (it would leave train/)",
    );
}

/// Issue 18: a missing weights file is found before anything is registered
/// (it used to leave a sweep with pending jobs after every failed try).
#[test]
fn a_missing_weights_file_leaves_nothing_behind() {
    let env = Env::new();
    let file = kaggle(&env);
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace(r#"weights = "random""#, r#"weights = "weights/missing.safetensors""#);
    assert!(text.contains("missing.safetensors"), "{text}");
    std::fs::write(&file, text).unwrap();
    let out = run(&env, &file);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.safetensors: cannot open: "), "{err}");
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status, serde_json::json!([]), "nothing is recorded: {status}");
}
