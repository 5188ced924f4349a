//! Issue 16: the faults a long sweep meets in the wild, one test each, driven
//! through the command line: the exit code, the one line that names the
//! file at fault, and the database unchanged (or consistent, nothing
//! recorded lost).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sweep_worker::{synthetic_image, SyntheticConfig};

use crate::{json, stderr, stdout, Env};

/// A sweep file on generated images (no files to read): `images` 40x32
/// pictures of `classes` classes, random ResNet-18 at 32 pixels.
fn synthetic(name: &str, images: usize, epochs: usize, grid: &str) -> String {
    format!(
        r#"
name = "{name}"

[data]
layout = "synthetic"
classes = 3
images = {images}
width = 40
height = 32
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 4
epochs = {epochs}

[grid]
{grid}
"#
    )
}

const BREEDS: [&str; 3] = ["beagle", "pug", "whippet"];
const IMAGES: usize = 12;

/// The `i`-th image's id, shaped like Kaggle's (32 hex digits).
fn id(i: usize) -> String {
    format!("{:032x}", i * 7919 + 1)
}

/// A kaggle-layout data set of 12 real JPEGs in `dogs/` (labels as
/// `label(i)` says), and a sweep file over it with these weights.
fn kaggle(env: &Env, label: impl Fn(usize) -> &'static str, weights: &str) -> PathBuf {
    let root = env.path("dogs");
    std::fs::create_dir_all(root.join("train")).expect("mkdir");
    let cfg = SyntheticConfig { classes: 3, images: IMAGES, width: 48, height: 40, seed: 5 };
    let mut csv = "id,breed\n".to_owned();
    for i in 0..IMAGES {
        synthetic_image(&cfg, i).save(image(env, i)).expect("write an image");
        csv.push_str(&format!("{},{}\n", id(i), label(i)));
    }
    std::fs::write(root.join("labels.csv"), csv).expect("write labels.csv");
    let toml = format!(
        r#"
name = "dogs"

[data]
layout = "kaggle"
root = "dogs"
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "{weights}"
image_size = 32

[train]
batch_size = 4
epochs = 2
"#
    );
    env.write("dogs.toml", &toml)
}

fn image(env: &Env, i: usize) -> PathBuf {
    env.path("dogs").join("train").join(format!("{}.jpg", id(i)))
}

fn three_breeds(i: usize) -> &'static str {
    BREEDS[i % 3]
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).expect("read the image");
    std::fs::write(path, &bytes[..bytes.len() / 2]).expect("truncate the image");
}

/// `sweep run FILE`.
fn run(env: &Env, file: &Path) -> Output {
    env.sweep(&["run", file.to_str().expect("utf-8 path"), "--format", "json"])
}

/// The `error:` lines of a run's stderr, and the lines that continue them.
fn error_text(out: &Output) -> String {
    let err = stderr(out);
    let start = err.find("error: ").unwrap_or_else(|| panic!("no error line in\n{err}"));
    err[start..].to_owned()
}

/// Nothing is recorded (issue 18: what fails at once is found before the
/// sweep is registered): no sweep, no job, no feature pass, nothing cached.
fn nothing_trained(env: &Env) {
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status, serde_json::json!([]), "nothing is recorded: {status}");
    assert_eq!(cache_entries(&env.path("sweep-cache")), Vec::<String>::new(), "nothing cached");
}

/// The sweep is recorded with its one job pending (a fault found only when
/// the pass starts: the cache folder), but nothing ran:
/// no feature pass, no epoch, nothing cached.
fn registered_but_nothing_trained(env: &Env) {
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status.as_array().map(Vec::len), Some(1), "the sweep is recorded: {status}");
    assert_eq!((status[0]["pending"].as_i64(), status[0]["done"].as_i64()), (Some(1), Some(0)), "{status}");
    assert_eq!(status[0]["failed"].as_i64(), Some(0), "no job is blamed: {status}");
    assert!(status[0]["features"].is_null(), "no features were recorded: {status}");
    let table = json(&env.sweep(&["table", "--format", "json"]));
    let job = table[0]["job_id"].as_str().expect("the job is listed");
    assert_eq!(json(&env.sweep(&["show", job, "--format", "json"])), serde_json::json!([]), "no epoch");
    assert_eq!(cache_entries(&env.path("sweep-cache")), Vec::<String>::new(), "nothing cached");
}

/// The names of the files in a cache folder (none if it does not exist).
fn cache_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every file of `dir`: its name, length and a checksum of its bytes (FNV-1a).
fn snapshot(dir: &Path) -> Vec<(String, usize, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let sum =
                bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes.len(), sum)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_truncated_jpeg_is_refused_naming_it_and_nothing_is_trained() {
    let env = Env::new();
    let file = kaggle(&env, three_breeds, "random");
    truncate(&image(&env, 7));
    let out = run(&env, &file);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_text(&out);
    let want = format!("error: {}: cannot decode image: truncated", image(&env, 7).display());
    assert!(err.starts_with(&want), "want `{want}` in\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!stderr(&out).contains("features: computed"), "{}", stderr(&out));
    nothing_trained(&env);
}

/// Every bad file is found by one run, before the backbone is even loaded:
/// the weights here are unusable too, and the run never gets to them.
#[test]
fn every_broken_image_is_listed_at_once_before_any_backbone_work() {
    let env = Env::new();
    nan_weights(&env.path("nan.safetensors"));
    let file = kaggle(&env, three_breeds, "nan.safetensors");
    let originals: Vec<(usize, Vec<u8>)> = [0, 6, 11].map(|i| (i, std::fs::read(image(&env, i)).unwrap())).into();
    std::fs::write(image(&env, 0), "id,breed\nthis is a CSV file, not a picture\n").unwrap();
    std::fs::write(image(&env, 6), b"").unwrap();
    truncate(&image(&env, 11));
    let started = Instant::now();
    let out = run(&env, &file);
    let err = error_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let mut lines = err.lines();
    assert_eq!(lines.next(), Some(format!("error: 3 of {IMAGES} images cannot be decoded:").as_str()), "{err}");
    let bad: Vec<&str> = lines.collect();
    assert_eq!(bad.len(), 3, "{err}");
    for (line, (i, problem)) in bad.iter().zip([(0, "not a JPEG or PNG"), (6, "the file is empty"), (11, "truncated")])
    {
        let want = format!("error: {}: ", image(&env, i).display());
        assert!(line.starts_with(&want), "want `{want}` in\n{err}");
        assert!(line.contains(problem), "want `{problem}` in `{line}`");
    }
    assert!(!err.contains("nan.safetensors"), "the weights were never loaded: {err}");
    assert!(!stderr(&out).contains("features: computed"), "{}", stderr(&out));
    // Nothing heavy ran: a check of twelve files, not a backbone pass.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    nothing_trained(&env);

    // Those three repaired, only the weights are left to refuse.
    for (i, bytes) in originals {
        std::fs::write(image(&env, i), bytes).unwrap();
    }
    let out = run(&env, &file);
    let err = error_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: {}: ", env.path("nan.safetensors").display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A ResNet-18 weights file, in safetensors' format written by hand (an
/// 8-byte header length, a JSON header, the data), every value NaN.
fn nan_weights(path: &Path) -> usize {
    let shapes = sweep_worker::param_shapes(sweep_worker::Arch::Resnet18);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &shapes {
        let len = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend((header.len() as u64).to_le_bytes());
    bytes.extend(header);
    let nan = f32::NAN.to_le_bytes();
    for _ in 0..offset / 4 {
        bytes.extend(nan);
    }
    std::fs::write(path, bytes).expect("write the weights");
    shapes.len()
}

#[test]
fn weights_full_of_nan_are_refused_naming_the_tensors() {
    let env = Env::new();
    let weights = env.path("nan.safetensors");
    let tensors = nan_weights(&weights);
    let file =
        env.write("nan.toml", &synthetic("nan", 24, 2, "lr = [0.01]").replace("\"random\"", "\"nan.safetensors\""));
    let out = run(&env, &file);
    let err = error_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "error: {}: {tensors} of {tensors} tensors hold unusable values: `conv1.weight` has 9408 of 9408 values NaN \
         or infinite, `layer1.0.conv1.weight` has 36864 of 36864 values NaN or infinite",
        weights.display()
    );
    assert!(err.starts_with(&want), "want `{want}` in\n{err}");
    assert!(err.trim_end().ends_with(&format!("and {} more", tensors - 4)), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The sanity check loads the weights before the sweep is registered.
    nothing_trained(&env);
}

#[test]
fn a_data_set_of_one_class_is_refused_naming_the_labels_file() {
    let env = Env::new();
    let file = kaggle(&env, |_| "pug", "random");
    let out = run(&env, &file);
    let err = error_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let labels = env.path("dogs").join("labels.csv");
    assert_eq!(
        err.trim_end(),
        format!("error: {}: only one class, `pug`: a classifier needs at least two classes", labels.display())
    );
    // Refused while reading the labels: the sweep is recorded, nothing else.
    nothing_trained(&env);
}

#[test]
fn a_stale_cache_temporary_of_a_dead_process_is_removed_by_the_next_run() {
    let env = Env::new();
    let cache = env.path("sweep-cache");
    std::fs::create_dir_all(&cache).unwrap();
    // No process has this pid (Linux's pid_max is at most 2^22).
    let stale = format!("{:032x}.tmp4000000000", 0xdead_u32);
    // This test's own process is alive: its temporary is a pass in progress.
    let live = format!("{:032x}.tmp{}", 0xbeef_u32, std::process::id());
    std::fs::write(cache.join(&stale), vec![0u8; 4096]).unwrap();
    std::fs::write(cache.join(&live), b"in progress").unwrap();
    let file = env.write("tiny.toml", &synthetic("tiny", 24, 2, "lr = [0.01]"));
    let out = run(&env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = cache_entries(&cache);
    assert!(!entries.contains(&stale), "{entries:?}");
    assert!(entries.contains(&live), "a live process's temporary is kept: {entries:?}");
    assert_eq!(entries.len(), 2, "the new entry and the live temporary: {entries:?}");
    assert_eq!(json(&out)[0]["status"], "done");
}

#[test]
fn a_cache_dir_that_is_a_regular_file_is_refused_before_the_pass() {
    let env = Env::new();
    let not_a_folder = env.write("cache.txt", "my notes\n");
    let file = env.write("tiny.toml", &synthetic("tiny", 24, 2, "lr = [0.01]"));
    let out = env.sweep(&["run", file.to_str().unwrap(), "--cache-dir", not_a_folder.to_str().unwrap()]);
    let err = error_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end(), format!("error: feature cache {}: not a folder", not_a_folder.display()));
    assert!(!stderr(&out).contains("features: computed"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&not_a_folder).unwrap(), "my notes\n", "the file is untouched");
    registered_but_nothing_trained(&env);
}

/// How to run `sweep` as a user the folder's permissions apply to: root
/// ignores them, so as root the command runs as `nobody` through
/// `setpriv`; the reason it cannot, when it cannot.
fn as_unprivileged() -> Result<Vec<String>, String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| format!("cannot run `id -u`: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(Vec::new());
    }
    let setpriv = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let probe = Command::new("setpriv").args(setpriv).arg("true").stderr(Stdio::piped()).output();
    match probe {
        Ok(out) if out.status.success() => Ok(std::iter::once("setpriv").chain(setpriv).map(str::to_owned).collect()),
        Ok(out) => Err(format!("`setpriv` cannot drop root here: {}", stderr(&out).trim())),
        Err(e) => Err(format!("running as root without `setpriv` ({e})")),
    }
}

/// Issue 16: a finished sweep in a folder that accepts no new file (a
/// read-only share, a results folder handed to a colleague) still reads:
/// `status`, `table`, `show` and `export` write nothing beside it.
#[test]
fn a_finished_database_in_a_read_only_folder_is_still_readable() {
    use std::os::unix::fs::PermissionsExt;
    let prefix = match as_unprivileged() {
        Ok(prefix) => prefix,
        Err(reason) => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI must run this test: {reason}");
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let env = Env::new();
    let folder = env.path("results");
    std::fs::create_dir(&folder).unwrap();
    let db = folder.join("sweep.db");
    let db_arg = db.to_str().unwrap();
    let file = env.write("tiny.toml", &synthetic("tiny", 24, 2, "lr = [0.01, 0.05]"));
    let out = env.sweep(&["--db", db_arg, "run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reads: [&[&str]; 3] =
        [&["status", "--format", "json"], &["table", "--format", "json"], &["table", "--format", "csv"]];
    let expected: Vec<String> = reads
        .iter()
        .map(|args| {
            let out = env.sweep(&[&["--db", db_arg][..], args].concat());
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
        })
        .collect();

    // The folder takes no new file; the scratch folder around it is open to
    // `nobody`, and so is the folder the export writes.
    let mode = |path: &Path, mode| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    mode(env.dir.path(), 0o755);
    let out_dir = env.path("export");
    std::fs::create_dir(&out_dir).unwrap();
    mode(&out_dir, 0o777);
    mode(&folder, 0o555);
    let before = snapshot(&folder);
    let sweep = |args: &[&str]| -> Output {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(env!("CARGO_BIN_EXE_sweep-under-test"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_sweep-under-test")),
        };
        cmd.args(["--db", db_arg]).args(args).env_remove("RUST_LOG").current_dir(env.dir.path());
        cmd.output().expect("run sweep")
    };
    // Opening for writing is what fails there (the -wal and -shm files).
    let run_again = sweep(&["run", file.to_str().unwrap()]);
    assert_eq!(run_again.status.code(), Some(1), "{}", stderr(&run_again));
    assert!(stderr(&run_again).contains(db_arg), "{}", stderr(&run_again));
    for (args, expected) in reads.iter().zip(&expected) {
        let out = sweep(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(&stdout(&out), expected, "{args:?}");
    }
    let job = json(&sweep(&["table", "--format", "json"]))[0]["job_id"].as_str().unwrap().to_owned();
    let show = sweep(&["show", &job, "--format", "json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert_eq!(json(&show).as_array().map(Vec::len), Some(2));
    let export = sweep(&["export", "--out", out_dir.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));
    let jobs_csv = std::fs::read_to_string(out_dir.join("jobs.csv")).unwrap();
    assert_eq!(jobs_csv, expected[2]);
    assert_eq!(cache_entries(&out_dir.join("heads")).len(), 2, "each job's best head");
    mode(&folder, 0o755);
    assert_eq!(snapshot(&folder), before, "nothing was written beside the database");
}

/// Issue 16: `sweep status` and other sweeps' runs beside a sweep being
/// trained never call its live database damaged, and every one succeeds.
#[test]
fn status_and_other_sweeps_beside_a_running_sweep_never_see_a_damaged_database() {
    let env = Env::new();
    // Four jobs of 20 epochs of 90 one-image steps: seconds of writes.
    let main = env.write(
        "main.toml",
        &synthetic("main", 120, 20, "lr = [0.01, 0.05]\nmomentum = [0.0, 0.9]")
            .replace("batch_size = 4", "batch_size = 1"),
    );
    let db = env.path("sweep.db");
    // One feature pass first, so the small sweeps below find the features
    // cached and do their own writes quickly.
    let warm = env.write("warm.toml", &synthetic("warm", 120, 1, "lr = [0.1]"));
    let out = run(&env, &warm);
    assert!(out.status.success(), "{}", stderr(&out));

    let writer = Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
        .args(["run", main.to_str().unwrap(), "--parallel", "2", "--format", "json"])
        .env("SWEEP_DB", &db)
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let pid = writer.id();
    let writer = std::thread::spawn(move || writer.wait_with_output().expect("wait for the writer"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut statuses, mut others) = (0, Vec::new());
    while !writer.is_finished() && Instant::now() < deadline {
        let out = env.sweep(&["status", "--format", "json"]);
        assert!(out.status.success(), "status beside a live sweep: {}", stderr(&out));
        assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
        statuses += 1;
        if statuses % 2 == 1 {
            let n = others.len();
            let file = env.write(&format!("other{n}.toml"), &synthetic(&format!("other{n}"), 120, 2, "lr = [0.02]"));
            let out = run(&env, &file);
            let err = stderr(&out);
            assert!(out.status.success(), "sweep other{n} beside a live sweep: {err}");
            assert!(!err.contains("damaged") && !err.contains("locked"), "{err}");
            others.push(json(&out)[0]["status"].as_str().unwrap().to_owned());
        }
    }
    if !writer.is_finished() {
        // Past the bound: stop it as a user would; what it recorded stays.
        Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill -INT");
    }
    let out = writer.join().expect("the writer's thread");
    let err = stderr(&out);
    assert!(!err.contains("damaged") && !err.contains("locked"), "{err}");
    assert!(statuses >= 2 && !others.is_empty(), "the loop ran beside the writer: {statuses} {others:?}");
    assert!(others.iter().all(|s| s == "done"), "{others:?}");
    if out.status.success() {
        // The writer's own table, read after it ended, and every epoch of every job.
        let rows = json(&out);
        assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{rows}\n{err}");
        for row in rows.as_array().unwrap() {
            let epochs = json(&env.sweep(&["show", row["job_id"].as_str().unwrap(), "--format", "json"]));
            let numbers: Vec<i64> = epochs.as_array().unwrap().iter().map(|e| e["epoch"].as_i64().unwrap()).collect();
            assert_eq!(numbers, (1..=20).collect::<Vec<_>>(), "{row}");
        }
    } else {
        assert_eq!(out.status.code(), Some(130), "{err}");
    }
    // Consistent: every sweep is there, and nothing is failed.
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status.as_array().unwrap().len(), 2 + others.len(), "{status}");
    assert!(status.as_array().unwrap().iter().all(|s| s["failed"] == 0 && s["running"] == 0), "{status}");
}

/// A database made by this sweep, finished and closed.
fn finished_database(env: &Env) -> PathBuf {
    let file = env.write("tiny.toml", &synthetic("tiny", 24, 2, "lr = [0.01]"));
    let out = run(env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    env.path("sweep.db")
}

/// Runs every command that opens the database and checks each fails with
/// `want` and the folder's files are byte for byte as they were.
fn refused_untouched(env: &Env, db: &Path, want: &str) {
    let before = snapshot(env.dir.path());
    // What SQLite's read-only connection leaves beside a WAL database when
    // the check reads it: an empty `-wal` (nothing written) and the `-shm`
    // index, which the next writer removes. The database's bytes are the same.
    let but_for_sqlite_files = |mut files: Vec<(String, usize, u64)>| {
        files.retain(|(name, len, _)| !(name.ends_with("-shm") || (name.ends_with("-wal") && *len == 0)));
        files
    };
    let db_arg = db.to_str().unwrap();
    let tiny = env.path("tiny.toml");
    let commands: [&[&str]; 6] = [
        &["status"],
        &["table"],
        &["show", "abc"],
        &["export", "--out", "exported"],
        &["run", tiny.to_str().unwrap()],
        &["resume"],
    ];
    for args in commands {
        let out = env.sweep(&[&["--db", db_arg][..], args].concat());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end(), format!("error: {want}"), "{args:?}");
        assert_eq!(but_for_sqlite_files(snapshot(env.dir.path())), before, "{args:?} changed a file");
    }
    assert!(!env.path("exported").exists());
}

#[test]
fn a_database_of_a_newer_schema_is_refused_byte_for_byte_untouched() {
    let env = Env::new();
    let db = finished_database(&env);
    let newer = sweep_store::latest_version() + 1;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    let want = format!(
        "{}: written by a newer sweep (schema version {newer}; this sweep knows up to {}): upgrade sweep",
        db.display(),
        sweep_store::latest_version()
    );
    refused_untouched(&env, &db, &want);
}

#[test]
fn a_foreign_sqlite_file_is_refused_untouched() {
    let env = Env::new();
    let _ = finished_database(&env);
    let notes = env.path("notes.db");
    let conn = rusqlite::Connection::open(&notes).unwrap();
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('x');",
    )
    .unwrap();
    drop(conn);
    let want = format!(
        "{}: not a sweep database: an SQLite database with 1 schema objects of another program",
        notes.display()
    );
    refused_untouched(&env, &notes, &want);
}

/// How this test can mount a small file system of its own: `unshare` into a
/// private mount namespace (as root; else in a user namespace too), where a
/// tmpfs of a few hundred KiB is a disk that fills up for real. The reason
/// it cannot, when it cannot.
fn private_mounts(env: &Env) -> Result<&'static [&'static str], String> {
    let probe = env.path("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let mut why = Vec::new();
    for flags in [&["-m"][..], &["-rm"][..]] {
        let out = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$1\"", "sh"])
            .arg(&probe)
            .output();
        match out {
            Ok(out) if out.status.success() => return Ok(flags),
            Ok(out) => why.push(format!("unshare {}: {}", flags.join(" "), stderr(&out).trim())),
            Err(e) => why.push(format!("cannot run unshare: {e}")),
        }
    }
    Err(why.join("; "))
}

/// [`private_mounts`]'s flags, or `None` where there is no private mount
/// namespace, saying the test is skipped (under CI=true there must be one).
fn mount_namespace(env: &Env) -> Option<&'static [&'static str]> {
    match private_mounts(env) {
        Ok(flags) => Some(flags),
        Err(reason) => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI must run this test: {reason}");
            eprintln!("skipped: no private mount namespace: {reason}");
            None
        }
    }
}

/// Mounts a tmpfs of `kib` KiB on `small`, runs `sweep --db small/sweep.db
/// ARGS` there, and copies what it left into `kept` (the tmpfs goes with the
/// namespace).
fn on_a_small_disk(env: &Env, flags: &[&str], kib: u64, args: &[&str]) -> Output {
    let (small, kept) = (env.path("small"), env.path("kept"));
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    let script = r#"mount -t tmpfs -o "size=${KIB}k" tmpfs "$SMALL" || exit 99
rc=0
"$SWEEP" --db "$SMALL/sweep.db" "$@" || rc=$?
cp -a "$SMALL/." "$KEPT/"
exit $rc"#;
    Command::new("unshare")
        .args(flags)
        .args(["sh", "-c", script, "sh"])
        .args(args)
        .env("KIB", kib.to_string())
        .env("SMALL", &small)
        .env("KEPT", &kept)
        .env("SWEEP", env!("CARGO_BIN_EXE_sweep-under-test"))
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .output()
        .expect("run unshare")
}

/// Issue 16: a disk that fills up while epochs are recorded is nobody's
/// fault. The sweep stops as at Ctrl-C: what is recorded stays, the running
/// job is interrupted (never failed), no other job is claimed, and the
/// message names the database, the room needed and `sweep resume`. Once
/// there is room, resuming ends with the results of a run never stopped.
///
/// The disk is real: a tmpfs of 320 KiB in a private mount namespace, so
/// SQLite's writes fail with ENOSPC and it answers SQLITE_FULL, as on a full
/// disk. (SQLite's `max_page_count` gives the same SQLITE_FULL, and the
/// store's unit test uses it; here the whole program meets the real thing.)
#[test]
fn a_full_disk_stops_the_sweep_keeps_every_epoch_and_resume_completes() {
    let env = Env::new();
    let Some(flags) = mount_namespace(&env) else { return };
    let file = env.write("full.toml", &synthetic("full", 48, 10, "lr = [0.01, 0.05]\nmomentum = [0.0, 0.9]"));
    let (file, cache) = (file.to_str().unwrap(), env.path("cache"));
    let cache = cache.to_str().unwrap();
    // Room for the schema, the sweep and the store's 64 KiB reserve, not for
    // its 40 epochs: the disk fills while a job trains (grown with the
    // schema: 0003 records the data, 0006 rebuilds `jobs`; at 464–480 KiB it
    // fills as a job closes, with none left to interrupt; 1024 holds the
    // whole sweep). One job slot: one job is running when the disk fills.
    let out = on_a_small_disk(&env, flags, 640, &["run", file, "--cache-dir", cache, "--parallel", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let small_db = env.path("small").join("sweep.db");
    let last = err.lines().last().unwrap_or_default();
    let want = format!(
        "error: {}: the disk is full: every recorded epoch is kept and the running jobs are interrupted; free at \
         least ",
        small_db.display()
    );
    assert!(last.starts_with(&want), "want `{want}` in\n{err}");
    assert!(
        last.contains(" MiB (") && last.contains(" epochs left to record) and continue with `sweep resume "),
        "{last}"
    );
    assert!(!err.contains(" failed"), "no job is blamed:\n{err}");

    // What it reported is recorded; no job failed; none is left running.
    let kept = env.path("kept").join("sweep.db");
    let kept_arg = kept.to_str().unwrap();
    let status = json(&env.sweep(&["--db", kept_arg, "status", "--format", "json"]));
    assert_eq!((status[0]["failed"].as_i64(), status[0]["running"].as_i64()), (Some(0), Some(0)), "{status}\n{err}");
    assert_eq!(status[0]["interrupted"].as_i64(), Some(1), "{status}\n{err}");
    assert!(status[0]["pending"].as_i64().unwrap() >= 1, "the fault came before the end: {status}\n{err}");
    let mut reported = std::collections::BTreeMap::new();
    for line in err.lines().filter(|l| l.starts_with("job ") && l.contains(": train loss")) {
        let (job, rest) = line["job ".len()..].split_once(" epoch ").unwrap();
        reported.insert(job.to_owned(), rest.split(':').next().unwrap().parse::<usize>().unwrap());
    }
    assert!(!reported.is_empty(), "{err}");
    for (job, last_epoch) in &reported {
        let epochs = json(&env.sweep(&["--db", kept_arg, "show", job, "--format", "json"]));
        assert_eq!(epochs.as_array().unwrap().len(), *last_epoch, "{job}: every reported epoch is kept\n{err}");
    }

    // With room (the same files on the ordinary disk), resume completes the
    // sweep as a run never stopped would have.
    let out = env.sweep(&["--db", kept_arg, "resume", "--cache-dir", cache]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = env.path("reference.db");
    let out = env.sweep(&["--db", reference.to_str().unwrap(), "run", file, "--cache-dir", cache]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = crate::resume::results(&env, &kept);
    assert_eq!(got["table"].as_array().unwrap().len(), 4);
    assert!(got["table"].as_array().unwrap().iter().all(|r| r["status"] == "done"), "{got}");
    assert_eq!(got, crate::resume::results(&env, &reference));
}

/// However the disk fills, a run that stops on it leaves no job `running`:
/// the write that failed may have left no byte free, so the store keeps room
/// beside the database (`sweep.db-reserve`) and frees it for the writes that
/// mark the running jobs interrupted. Without it, some sizes in this range
/// (656 KiB when it was written) left the job `running`, though the message
/// said it was interrupted.
#[test]
fn a_full_disk_of_any_size_leaves_no_job_running() {
    let outer = Env::new();
    let Some(flags) = mount_namespace(&outer) else { return };
    let file = outer.write("full.toml", &synthetic("full", 48, 10, "lr = [0.01, 0.05]\nmomentum = [0.0, 0.9]"));
    let (file, cache) = (file.to_str().unwrap(), outer.path("cache"));
    let cache = cache.to_str().unwrap();
    for kib in (480..=720).step_by(16) {
        let env = Env::new();
        let out = on_a_small_disk(&env, flags, kib, &["run", file, "--cache-dir", cache, "--parallel", "1"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{kib} KiB: {err}");
        assert!(err.contains("the disk is full"), "{kib} KiB: {err}");
        let kept = env.path("kept").join("sweep.db");
        let status = json(&env.sweep(&["--db", kept.to_str().unwrap(), "status", "--format", "json"]));
        assert_eq!(status[0]["running"].as_i64(), Some(0), "{kib} KiB: {status}\n{err}");
        assert_eq!(status[0]["failed"].as_i64(), Some(0), "{kib} KiB: {status}\n{err}");
    }
}

/// Issue 16: a job whose `last` checkpoint is damaged cannot resume, and
/// `--retry-failed` fails it the same way forever. The error says what to do:
/// `sweep resume SWEEP --restart JOB`, which starts the job again from epoch
/// 0 (its recorded epochs deleted first) and ends as a run never damaged.
#[test]
fn a_damaged_last_checkpoint_says_restart_and_restart_completes_the_job() {
    let env = Env::new();
    let file = env.write("tiny.toml", &synthetic("tiny", 24, 3, "lr = [0.01, 0.05]"));
    let out = run(&env, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let db = env.path("sweep.db");
    let before = crate::resume::results(&env, &db);
    let table = json(&out);
    let (job, other) = (table[0]["job_id"].as_str().unwrap(), table[1]["job_id"].as_str().unwrap());
    let sweep = json(&env.sweep(&["status", "--format", "json"]))[0]["sweep_id"].as_str().unwrap().to_owned();

    // Stopped after epoch 2, then its saved state damaged on disk.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "UPDATE jobs SET status = 'interrupted', best_valid_acc = NULL, best_epoch = NULL WHERE id = '{job}';
         DELETE FROM epochs WHERE job_id = '{job}' AND epoch = 3;
         DELETE FROM checkpoints WHERE job_id = '{job}' AND kind = 'best';
         UPDATE checkpoints SET epoch = 2, state = X'00DEADBEEF' WHERE job_id = '{job}' AND kind = 'last';"
    ))
    .unwrap();
    drop(conn);

    let hint = format!("start it again with `sweep resume {sweep} --restart {job}`");
    for args in [&["resume"][..], &["resume", "--retry-failed"][..]] {
        let out = env.sweep(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let line = err.lines().find(|l| l.starts_with(&format!("job {job} failed: "))).expect(&err);
        assert!(line.contains("cannot resume: its last checkpoint is damaged (checkpoint: "), "{line}");
        assert!(line.ends_with(&hint), "{line}");
    }
    // An unknown job, or one of another sweep, is refused naming it.
    let out = env.sweep(&["resume", &sweep, "--restart", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot restart job ffffffff: "), "{}", stderr(&out));

    // --restart with a prefix of the id, as `sweep show` takes it.
    let out = env.sweep(&["resume", &sweep, "--restart", &job[..8], "--format", "json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("job restarted from epoch 0") && err.contains("discarded_epochs=2"), "{err}");
    assert!(err.contains(&format!("job {job} started")) && !err.contains(&format!("job {other} started")), "{err}");
    // The same results as before the damage: training is seeded.
    assert_eq!(crate::resume::results(&env, &db), before);
}

/// Rewrites `dogs/labels.csv` with the images `keep` keeps, labelled by `label`.
fn relabel(env: &Env, keep: impl Fn(usize) -> bool, label: impl Fn(usize) -> &'static str) {
    let mut csv = "id,breed\n".to_owned();
    for i in (0..IMAGES).filter(|&i| keep(i)) {
        csv.push_str(&format!("{},{}\n", id(i), label(i)));
    }
    std::fs::write(env.path("dogs").join("labels.csv"), csv).expect("write labels.csv");
}

/// Every epoch row of every job in the database, in order.
fn epoch_rows(db: &Path) -> Vec<(String, i64, f64, f64)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let mut stmt =
        conn.prepare("SELECT job_id, epoch, train_loss, valid_acc FROM epochs ORDER BY job_id, epoch").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn changed_data_is_a_new_sweep_with_new_jobs_and_the_old_results_stay_readable() {
    let env = Env::new();
    let file = kaggle(&env, three_breeds, "random");
    let first = run(&env, &file);
    assert!(first.status.success(), "{}", stderr(&first));
    let old_table = json(&env.sweep(&["table", "--format", "json"]));
    let old_sweep =
        json(&env.sweep(&["status", "--format", "json"]))[0]["sweep_id"].as_str().expect("an id").to_owned();
    let old_epochs = epoch_rows(&env.path("sweep.db"));
    // The manifest is recorded as a header and parts of images; before
    // schema 7 it was one JSON document. Made so here, it is read the same.
    {
        let conn = rusqlite::Connection::open(env.path("sweep.db")).unwrap();
        let header: String = conn.query_row("SELECT manifest FROM data_manifests", [], |r| r.get(0)).unwrap();
        let part: String =
            conn.query_row("SELECT items FROM data_manifest_parts WHERE part = 0", [], |r| r.get(0)).unwrap();
        let parts: i64 = conn.query_row("SELECT count(*) FROM data_manifest_parts", [], |r| r.get(0)).unwrap();
        assert!(header.ends_with(r#""items":[]}"#) && parts == 1, "{header}, {parts} parts");
        let whole = header.replace(r#""items":[]"#, &format!(r#""items":{part}"#));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&whole).unwrap()["items"].as_array().map(Vec::len),
            Some(IMAGES)
        );
        conn.execute_batch("DELETE FROM data_manifest_parts").unwrap();
        conn.execute("UPDATE data_manifests SET manifest = ?1", [whole]).unwrap();
    }

    // The same data again: nothing to run, the same sweep.
    let again = run(&env, &file);
    assert!(stderr(&again).contains("0 to run"), "{}", stderr(&again));

    // Two images relabelled: the run says so before any work and trains new jobs.
    relabel(&env, |_| true, |i| if i < 2 { BREEDS[(i + 1) % 3] } else { three_breeds(i) });
    let changed = run(&env, &file);
    let err = stderr(&changed);
    assert!(changed.status.success(), "{err}");
    assert!(err.contains(&format!("the data changed since sweep {old_sweep} ran: 2 images relabelled")), "{err}");
    assert!(err.contains("1 to run"), "the job is trained again on the new data: {err}");
    let status = json(&env.sweep(&["status", "--format", "json"]));
    assert_eq!(status.as_array().map(Vec::len), Some(2), "two sweeps: {status}");
    let new_table = json(&env.sweep(&["table", "--format", "json"]));
    assert_ne!(new_table[0]["job_id"], old_table[0]["job_id"], "a new job");
    // The old sweep's table and every old epoch row are untouched.
    assert_eq!(json(&env.sweep(&["table", &old_sweep, "--format", "json"])), old_table);
    let epochs = epoch_rows(&env.path("sweep.db"));
    assert!(old_epochs.iter().all(|row| epochs.contains(row)), "old epochs kept");
    assert_eq!(epochs.len(), 2 * old_epochs.len());

    // An image removed: said as such.
    relabel(&env, |i| i != 5, three_breeds);
    let removed = run(&env, &file);
    assert!(
        stderr(&removed).contains(&format!("1 image removed (e.g. train/{}.jpg removed)", id(5))),
        "{}",
        stderr(&removed)
    );

    // Back to the first data: the first sweep, finished, nothing to run.
    relabel(&env, |_| true, three_breeds);
    let back = run(&env, &file);
    assert!(stderr(&back).contains(&format!("sweep {old_sweep}: 1 jobs, 0 to run")), "{}", stderr(&back));
}

#[test]
fn resume_on_changed_data_is_refused_and_mixes_nothing() {
    let env = Env::new();
    let file = kaggle(&env, three_breeds, "random");
    assert!(run(&env, &file).status.success());
    let before = epoch_rows(&env.path("sweep.db"));
    // Content changed in place: same ids and labels, other bytes.
    let cfg = SyntheticConfig { classes: 3, images: IMAGES, width: 48, height: 40, seed: 6 };
    synthetic_image(&cfg, 3).save(image(&env, 3)).expect("rewrite an image");
    let out = env.sweep(&["resume", "--retry-failed"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = error_text(&out);
    assert!(err.contains("the data changed since it ran (1 image with other bytes"), "{err}");
    assert!(err.contains(&format!("train/{}.jpg rewritten", id(3))), "{err}");
    assert!(err.contains("sweep run"), "says what to do: {err}");
    assert_eq!(epoch_rows(&env.path("sweep.db")), before, "nothing trained");
}
