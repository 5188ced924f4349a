//! Issue 16, hostile inputs: settings past what the machine has, and
//! strings and ids from files and databases that would otherwise drive the
//! terminal or the file system.

use sweep_worker::{synthetic_image, SyntheticConfig};

use crate::run::TINY;
use crate::{json, stderr, stdout, Env};

/// `--parallel 64` on a two-job sweep: more slots than jobs (or cores) only
/// made the jobs fight for the cores (45 times as long). The slots are
/// capped, and the run says so in one line.
#[test]
fn parallel_past_the_jobs_and_cores_is_capped_with_one_line() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--parallel", "64"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("--parallel 64: using ")).unwrap_or_else(|| panic!("{err}"));
    let used: usize = line["--parallel 64: using ".len()..].split(' ').next().unwrap().parse().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(used, cores.min(2), "{line}");
    assert!(line.ends_with(" cores, 2 jobs to run)") || line.ends_with(" core, 2 jobs to run)"), "{line}");
    // The default, one slot, says nothing.
    let again = env.sweep(&["--db", "again.db", "run", file.to_str().unwrap()]);
    assert!(again.status.success() && !stderr(&again).contains("--parallel"), "{}", stderr(&again));
}

/// [`TINY`] under another name (a TOML basic string's body).
fn named(name: &str) -> String {
    TINY.replace(r#"name = "tiny""#, &format!("name = \"{name}\""))
}

/// A sweep's name is data: an escape sequence in it is shown escaped in
/// text (it would recolour the terminal, or worse: move the cursor, set the
/// window title, write the clipboard) and kept exactly in JSON.
#[test]
fn control_characters_in_names_are_escaped_on_the_terminal_and_exact_in_json() {
    let env = Env::new();
    let file = env.write("red.toml", &named(r"a\u001b[31mred\r"));
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains('\u{1b}') && !stdout(&out).contains('\r'), "{}", stdout(&out));
    assert!(stdout(&out).contains(r"sweep a\u{1b}[31mred\u{d} ("), "{}", stdout(&out));

    let status = env.sweep(&["status"]);
    let text = stdout(&status);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    assert!(text.contains(r"a\u{1b}[31mred\u{d}"), "{text}");
    let rows = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(rows[0]["name"], "a\u{1b}[31mred\r");
    let csv = stdout(&env.sweep(&["status", "--format", "csv"]));
    assert!(csv.contains("\"a\u{1b}[31mred\r\""), "{csv:?}");

    // An error quoting the name is escaped too.
    let missing = env.sweep(&["table", "no\u{1b}]0;pwned\u{7}"]);
    assert!(!missing.status.success());
    assert!(!stderr(&missing).contains('\u{1b}') && !stderr(&missing).contains('\u{7}'), "{}", stderr(&missing));
}

/// No length breaks a command: a 10,000-character name runs, and its table
/// and status render.
#[test]
fn a_ten_thousand_character_name_renders() {
    let env = Env::new();
    let name = "n".repeat(10_000);
    let file = env.write("long.toml", &named(&name));
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [&["status"][..], &["table"], &["status", "--format", "markdown"], &["status", "--format", "json"]] {
        let out = env.sweep(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains(&name), "{args:?}");
    }
}

/// A database is data too: a job id rewritten to `../../evil` in a real
/// database (every table that holds it) makes `sweep export` refuse that
/// job's head, with a message, writing nothing outside the folder; the other
/// job's head is exported.
#[test]
fn a_crafted_job_id_cannot_write_outside_the_export_folder() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let (victim, other) = (rows[0]["job_id"].as_str().unwrap(), rows[1]["job_id"].as_str().unwrap());

    let evil = "../../evil";
    let db = rusqlite::Connection::open(env.path("sweep.db")).unwrap();
    db.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    for table in ["sweep_jobs", "epochs", "checkpoints"] {
        let changed = db.execute(&format!("UPDATE {table} SET job_id = ?1 WHERE job_id = ?2"), [evil, victim]).unwrap();
        assert!(changed > 0, "{table}");
    }
    assert_eq!(db.execute("UPDATE jobs SET id = ?1 WHERE id = ?2", [evil, victim]).unwrap(), 1);
    db.close().unwrap();

    std::fs::create_dir_all(env.path("a/b")).unwrap();
    let out = env.sweep(&["export", "--out", "a/b/export"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("job `../../evil`: not an id sweep makes"), "{err}");
    assert!(!env.path("a/evil.safetensors").exists() && !env.path("a/b/evil.safetensors").exists());
    assert!(!env.path("evil.safetensors").exists());
    let heads: Vec<String> = std::fs::read_dir(env.path("a/b/export/heads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(heads, [format!("{other}.safetensors")]);
    // The data is exported as it is: the CSV holds the crafted id, quoted.
    let jobs = std::fs::read_to_string(env.path("a/b/export/jobs.csv")).unwrap();
    assert!(jobs.contains(evil), "{jobs}");
}

/// A kaggle-layout set of 22 JPEGs in three classes, two of them broken (one
/// truncated, one not an image): returns the sweep file (with `extra` in
/// `[data]`) and the broken files' paths.
fn with_two_bad_images(env: &Env, extra: &str) -> (std::path::PathBuf, [std::path::PathBuf; 2]) {
    let root = env.path("dogs");
    std::fs::create_dir_all(root.join("train")).unwrap();
    let cfg = SyntheticConfig { classes: 3, images: 22, width: 40, height: 36, seed: 2 };
    let mut rows = String::from("id,breed\n");
    for i in 0..22 {
        let path = root.join("train").join(format!("img{i:02}.jpg"));
        synthetic_image(&cfg, i).save(&path).unwrap();
        rows.push_str(&format!("img{i:02},{}\n", ["beagle", "pug", "whippet"][i % 3]));
    }
    std::fs::write(root.join("labels.csv"), rows).unwrap();
    let truncated = root.join("train/img05.jpg");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = root.join("train/img17.jpg");
    std::fs::write(&garbage, b"<html>not found</html>").unwrap();
    let toml = format!(
        r#"
name = "two-bad"

[data]
layout = "kaggle"
root = "dogs"
valid_fraction = 0.25
{extra}

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 4
epochs = 2
"#
    );
    (env.write("dogs.toml", &toml), [truncated, garbage])
}

/// Issue 16: a data set with broken images fails listing every one of them;
/// with `skip_bad_images = true` it runs without them, warns, and records
/// which were left out for `sweep status`.
#[test]
fn skip_bad_images_leaves_them_out_warns_and_records_them() {
    let env = Env::new();
    let (file, bad) = with_two_bad_images(&env, "");
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 of 22 images cannot be decoded:"), "{err}");
    for path in &bad {
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    let (file, bad) = with_two_bad_images(&env, "skip_bad_images = true");
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(json(&out)[0]["status"], "done", "{err}");
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("skip_bad_images: left out")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(warning[0].contains("left out 2 of 22 images that cannot be decoded: "), "{err}");
    assert!(bad.iter().all(|p| warning[0].contains(&p.display().to_string())), "{err}");

    let status = json(&env.sweep(&["status", "--format", "json"]));
    let sweeps = status.as_array().unwrap();
    let skipped = sweeps.iter().find(|s| s["done"] == 1).expect("the sweep that ran")["skipped_images"].clone();
    let paths: Vec<&str> = skipped.as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(paths, bad.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());
    assert!(skipped[0]["problem"].as_str().unwrap().starts_with("truncated: "), "{skipped}");
    assert!(skipped[1]["problem"].as_str().unwrap().starts_with("not a JPEG or PNG file"), "{skipped}");
    // The run that failed on the bad images registered nothing.
    assert_eq!(sweeps.len(), 1, "{status}");
    let text = crate::stdout(&env.sweep(&["status"]));
    assert!(text.lines().next().unwrap().contains("Skipped"), "{text}");
}

/// A synthetic set of `images` images under `backbone`.
fn synthetic(images: u64, backbone: &str) -> String {
    format!(
        "name = \"huge\"\n[data]\nlayout = \"synthetic\"\nimages = {images}\n\
         [model]\nbackbone = \"{backbone}\"\nweights = \"random\"\nimage_size = 32\n[train]\nepochs = 1\n"
    )
}

/// Issue 16: a synthetic set too large for memory aborted the process. A
/// billion images are refused by the sweep file's range; ten million, whose
/// features need 19 GiB, are refused before anything of that size is
/// allocated, with the sizes, by a process allowed 4 GB (`ulimit -v`).
#[cfg(unix)]
#[test]
fn a_data_set_too_large_for_memory_is_refused_with_its_size() {
    let env = Env::new();
    let file = env.write("billion.toml", &synthetic(1_000_000_000, "resnet18"));
    let started = std::time::Instant::now();
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("data.images: must be between 4 and 10000000, got 1000000000"), "{}", stderr(&out));

    let file = env.write("ten-million.toml", &synthetic(10_000_000, "resnet18"));
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -v 4000000 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_sweep-under-test")])
        .args(["run", file.to_str().unwrap()])
        .env("SWEEP_DB", env.path("sweep.db"))
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: synthetic data: 10000000 images need 19.1 GiB of memory for the backbone pass (19.1 GiB of features, 512 floats an image from resnet18; "),
        "{err}"
    );
    assert!(err.contains("allowed by ulimit -v: use fewer or smaller images"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
}
