//! `sweep run`, `table`, `show`, `status` on small generated data.

use crate::{json, stderr, stdout, Env};

/// Two jobs on 48 generated 32x32 images, random ResNet-18: a few seconds.
pub(crate) const TINY: &str = r#"
name = "tiny"

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

[train]
batch_size = 8
epochs = 3

[grid]
lr = [0.01, 0.05]
"#;

#[test]
fn run_records_every_epoch_and_prints_the_table() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["status"], "done");
        assert_eq!(row["epochs"], 3);
        assert_eq!(row["batch_size"], 8);
        let acc = row["best_valid_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{row}");
        let best = row["best_epoch"].as_i64().unwrap();
        assert!((1..=3).contains(&best), "{row}");
    }
    assert!(stderr(&out).contains("features: computed and cached"), "{}", stderr(&out));

    // The store has every epoch.
    let job = rows[0]["job_id"].as_str().unwrap();
    let epochs = env.sweep(&["show", job, "--format", "json"]);
    assert!(epochs.status.success(), "{}", stderr(&epochs));
    let epochs = json(&epochs);
    let epochs = epochs.as_array().unwrap();
    assert_eq!(epochs.iter().map(|e| e["epoch"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    let best = epochs.iter().map(|e| e["valid_acc"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(rows[0]["best_valid_acc"].as_f64().unwrap(), best);

    // `sweep table` reads the same rows back; the paper's headings in table form.
    let table = env.sweep(&["table"]);
    assert!(table.status.success());
    let text = stdout(&table);
    for heading in ["Batch Size", "Workers", "LR", "Momentum", "Num Epoch", "Best Acc"] {
        assert!(text.contains(heading), "{text}");
    }
    let csv = stdout(&env.sweep(&["table", "tiny", "--format", "csv", "--sort", "best_valid_acc"]));
    assert!(csv.starts_with("job_id,batch_size,workers,lr,momentum,epochs,best_valid_acc,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);

    // Running the same file again trains nothing and runs no backbone pass.
    let again = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(json(&again), serde_json::Value::Array(rows.clone()));
    assert!(!stderr(&again).contains("features:"), "{}", stderr(&again));

    let status = stdout(&env.sweep(&["status", "--format", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["done"], 2);
}

#[test]
fn a_bad_sweep_file_exits_2_with_every_error() {
    let env = Env::new();
    let file = env
        .write("bad.toml", "name = \"x\"\n[data]\nlayout = \"nope\"\n[model]\nweights = \"random\"\n[train]\nlr = 0\n");
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:3: data.layout: must be one of"), "{err}");
    assert!(err.contains("bad.toml:7: train.lr: must be > 0, got 0"), "{err}");
    assert!(!env.path("sweep.db").exists(), "a bad file writes nothing");
}

#[test]
fn a_second_sweep_on_the_same_data_runs_no_backbone_pass() {
    let env = Env::new();
    let first = env.write("first.toml", TINY);
    let out = env.sweep(&["run", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("features: computed and cached"), "{}", stderr(&out));

    // Another sweep (other name, other grid) on the same images, transform and weights.
    let second =
        env.write("second.toml", &TINY.replace("name = \"tiny\"", "name = \"other\"").replace("[0.01, 0.05]", "[0.1]"));
    let out = env.sweep(&["run", second.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("features: reused from the cache (no backbone pass)"), "{}", stderr(&out));
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
    let status: serde_json::Value = serde_json::from_str(&stdout(&env.sweep(&["status", "--format", "json"]))).unwrap();
    assert_eq!(status[0]["features"], "computed");
    assert_eq!(status[1]["features"], "cached");

    // Issue 18: the backbone pass's cost is shown, for the sweep that paid
    // it and for the one that reused it.
    for row in status.as_array().unwrap() {
        assert_eq!(row["feature_images"], 48, "{row}");
        let seconds = row["feature_pass_seconds"].as_f64().expect("the pass was timed");
        let rate = row["feature_images_per_second"].as_f64().unwrap();
        assert!(seconds > 0.0 && (rate - 48.0 / seconds).abs() < 1e-6 * rate, "{row}");
    }
    let first_id = status[0]["sweep_id"].as_str().unwrap().to_owned();
    let table = stdout(&env.sweep(&["table", &first_id]));
    assert!(table.contains("features: 48 images, computed by a backbone pass of "), "{table}");
    let table = stdout(&env.sweep(&["table"]));
    let want = "features: 48 images, reused from the cache (computed by a backbone pass of ";
    assert!(table.contains(want) && table.contains(&format!("by sweep {first_id})")), "{table}");
}

#[test]
fn cuda_without_cuda_support_says_so() {
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let out = env.sweep(&["run", file.to_str().unwrap(), "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("`cuda` asked for, but this binary was built without CUDA support"), "{err}");
    // Anywhere in a list, and before anything is registered (issue 17: each device takes part of the pass).
    for (devices, want) in [
        ("cpu,cuda:1", "`cuda:1` asked for, but this binary was built without CUDA support"),
        ("cpu,,cpu", "unknown device ``: expected cpu, cuda or cuda:N"),
        ("cpu,cuda:x", "bad device `cuda:x`: expected cuda:N"),
    ] {
        let db = env.path(&format!("{devices}.db"));
        let out = env.sweep(&["--db", db.to_str().unwrap(), "run", file.to_str().unwrap(), "--device", devices]);
        assert_eq!(out.status.code(), Some(1), "{devices}");
        let err = stderr(&out);
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{devices}: {err}");
        assert!(!db.exists(), "{devices}: a sweep was registered");
    }
}

#[test]
fn k_fold_sweeps_report_mean_and_deviation_over_folds() {
    let env = Env::new();
    let file = env.write(
        "folds.toml",
        &TINY.replace("valid_fraction = 0.25", "folds = 3").replace("[0.01, 0.05]", "[0.01, 0.1]"),
    );
    let out = env.sweep(&["run", file.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per configuration");
    for row in rows {
        assert_eq!(row["folds"], 3);
        assert_eq!(row["status"], "done");
        let mean = row["best_valid_acc"].as_f64().unwrap();
        let std = row["best_valid_acc_std"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean) && std >= 0.0, "{row}");
    }
    // Six jobs (2 configurations x 3 folds) were trained, each on its own fold.
    let status: serde_json::Value = serde_json::from_str(&stdout(&env.sweep(&["status", "--format", "json"]))).unwrap();
    assert_eq!(status[0]["done"], 6);
    let text = stdout(&env.sweep(&["table"]));
    assert!(text.contains("k-fold: mean and standard deviation over the folds"), "{text}");
}

/// Issue 18: off a terminal (logs, CI, Slurm) the backbone pass prints a
/// progress line at a steady interval: images done, images/s, ETA.
#[test]
fn the_backbone_pass_prints_progress_lines_off_a_terminal() {
    let env = Env::new();
    let file =
        env.write("tiny.toml", &TINY.replace("epochs = 3", "epochs = 1").replace("lr = [0.01, 0.05]", "lr = [0.01]"));
    let out = env.sweep_with(&["run", file.to_str().unwrap(), "--parallel", "1"], &[("SWEEP_PROGRESS_SECONDS", "0")]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("features: ") && l.contains(" images/s, ")).collect();
    assert!(!lines.is_empty(), "no progress line:\n{err}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("features: 48/48 images, "), "{last}");
    assert!(last.contains(", elapsed ") && last.ends_with(", eta 0s"), "{last}");
    // The default interval (10 s) prints none for a pass this short.
    let env = Env::new();
    let file =
        env.write("tiny.toml", &TINY.replace("epochs = 3", "epochs = 1").replace("lr = [0.01, 0.05]", "lr = [0.01]"));
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(!stderr(&out).contains(" images/s, "), "{}", stderr(&out));
}

/// Issue 17: `sweep bench` says how far from the CPU's f32 peak the
/// backbone and a head epoch run, and how it computes the peak: nominal, and
/// measured on the threads the pass runs on (`RAYON_NUM_THREADS` here).
#[test]
fn bench_reports_the_share_of_the_cpu_peak() {
    let env = Env::new();
    let work = env.path("bench");
    let args = [
        "bench",
        "--work-dir",
        work.to_str().unwrap(),
        "--images",
        "8",
        "--classes",
        "2",
        "--width",
        "64",
        "--height",
        "48",
        "--decode-images",
        "4",
        "--backbone-batch",
        "2",
        "--backbone-batches",
        "1",
        "--skip-end-to-end",
    ];
    let out = env.sweep_with(&args, &[("RAYON_NUM_THREADS", "1")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["threads"], 1, "{report}");
    let peak = &report["cpu_peak"];
    if peak["isa"] == "sse2" {
        assert!(peak["measured_gflops_per_core"].is_null(), "{peak}");
    } else {
        // One thread: the pass's threads are one core.
        let measured = peak["measured_gflops_per_core"].as_f64().unwrap();
        assert!(measured > 0.0 && measured.is_finite(), "{peak}");
        assert!(peak["measured_gflops_all_threads"].as_f64().unwrap() > 0.0, "{peak}");
        let rate = report["backbone_images_per_second_f32"].as_f64().unwrap();
        let share = report["backbone_measured_peak_fraction_f32"].as_f64().unwrap();
        let all = peak["measured_gflops_all_threads"].as_f64().unwrap();
        assert!((share - rate * 8.18 / all).abs() < 1e-9, "{report}");
        assert!(report["head_measured_peak_fraction"].as_f64().unwrap() > 0.0, "{report}");
        // The f32 kernel alone, where it runs (AVX-512, not `SWEEP_CPU_F32=candle`): its share of the
        // peak, and the pass's share of it, follow from its rate.
        match peak["measured_f32_kernel_gflops_all_threads"].as_f64() {
            Some(kernel) => {
                assert_eq!(peak["isa"], "avx512", "{peak}");
                let of_peak = report["backbone_kernel_measured_peak_fraction_f32"].as_f64().unwrap();
                assert!(of_peak > 0.0 && (of_peak - kernel / all).abs() < 1e-9, "{report}");
                let of_kernel = report["backbone_share_of_kernel_f32"].as_f64().unwrap();
                assert!((of_kernel - rate * 8.18 / kernel).abs() < 1e-9, "{report}");
            }
            None => assert!(report["backbone_kernel_measured_peak_fraction_f32"].is_null(), "{report}"),
        }
    }
    assert!(["avx512", "avx2", "sse2"].contains(&peak["isa"].as_str().unwrap()), "{peak}");
    assert!(peak["how"].as_str().unwrap().contains("/proc/cpuinfo"), "{peak}");
    let cores = report["threads"].as_f64().unwrap();
    match peak["clock_ghz"].as_f64() {
        Some(ghz) => {
            let per_core = peak["gflops_per_core"].as_f64().unwrap();
            assert!((per_core - ghz * peak["flop_per_cycle_per_core"].as_f64().unwrap()).abs() < 1e-9);
            // The backbone's share follows from its rate, ResNet-50's 8.18 GFLOP an image, and the cores.
            let rate = report["backbone_images_per_second_f32"].as_f64().unwrap();
            let share = report["backbone_peak_fraction_f32"].as_f64().unwrap();
            assert!((share - rate * 8.18 / (per_core * cores)).abs() < 1e-9, "{report}");
            let head = report["head_peak_fraction"].as_f64().unwrap();
            assert!(share > 0.0 && head > 0.0 && head < 4.0, "{report}");
        }
        None => eprintln!("no clock in /proc/cpuinfo: the shares are not computed"),
    }
}

/// Issue 17: features are read from the cache without holding them in
/// memory. A sweep on cached features of 3000 images × 2048 floats (23 MiB)
/// is watched from outside: its anonymous memory (`RssAnon`, which a mapped
/// file's pages are not) never reaches the features' size. Read into memory
/// (the cache entry, then a tensor of it) it held twice that for the whole run.
/// On the CPU kernels' path (AVX2 or AVX-512), which reads rows in place.
#[cfg(target_os = "linux")]
#[test]
fn features_from_the_cache_are_mapped_not_held_in_memory() {
    if !sweep_worker::heads_train_on_one_thread() {
        // Without AVX2 a job trains through Candle, which gathers its train
        // and valid rows into tensors: the features' size again, by design.
        eprintln!("skipped: this CPU trains heads through Candle's ops, not the kernels that read the mapping");
        return;
    }
    let env = Env::new();
    let images = 3000u64;
    let sweep = |name: &str, lr: &str| {
        format!(
            "name = \"{name}\"\n[data]\nlayout = \"synthetic\"\nclasses = 4\nimages = {images}\nwidth = 32\nheight = 32\n\
             [model]\nbackbone = \"resnet50\"\nweights = \"random\"\nimage_size = 32\n\
             [train]\nbatch_size = 64\nepochs = 3\n[grid]\nlr = {lr}\n"
        )
    };
    let first = env.write("first.toml", &sweep("first", "[0.01]"));
    let out = env.sweep(&["run", first.to_str().unwrap(), "--cache-dir", "cache"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries: Vec<_> = std::fs::read_dir(env.path("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let features = images * 2048 * 4;
    assert!(std::fs::metadata(&entries[0]).unwrap().len() > features);

    // Another sweep on the same data: a cache hit, two jobs trained on it.
    let second = env.write("second.toml", &sweep("second", "[0.02, 0.05]"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
        .args(["run", second.to_str().unwrap(), "--cache-dir", "cache", "--format", "json"])
        .env("SWEEP_DB", env.path("sweep.db"))
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let kib = |text: &str, field: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
    };
    let (mut peak, mut samples) = (0u64, 0);
    while child.try_wait().unwrap().is_none() {
        // Gone (or a zombie without the field) between the check and the read: nothing to count.
        if let Some(anon) = std::fs::read_to_string(&status).ok().and_then(|t| kib(&t, "RssAnon:")) {
            peak = peak.max(anon * 1024);
            samples += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("features: reused from the cache (no backbone pass)"), "{}", stderr(&out));
    let rows = json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done" && r["epochs"] == 3), "{rows}");
    assert!(samples > 10, "the run was watched {samples} times");
    assert!(
        peak < features,
        "the run's anonymous memory peaked at {peak} bytes, as much as its features ({features} bytes)"
    );
}

/// Issue 17: `feature_dtype = "f16"` stores the features in half the bytes,
/// under their own cache key and job ids (an f32 sweep's ids are
/// untouched), and trains heads that score as the f32 features' do.
#[test]
fn f16_features_halve_the_cache_entry_and_train_like_f32() {
    let env = Env::new();
    let sweep = |name: &str, extra: &str| {
        format!(
            "name = \"{name}\"\n[data]\nlayout = \"synthetic\"\nclasses = 4\nimages = 400\nwidth = 40\nheight = 32\n\
             valid_fraction = 0.25\n[model]\nbackbone = \"resnet18\"\nweights = \"random\"\nimage_size = 32\n{extra}\
             [train]\nbatch_size = 16\nepochs = 4\n[grid]\nlr = [0.01, 0.05]\n"
        )
    };
    let run = |file: &str, text: &str| {
        let file = env.write(file, text);
        let out = env.sweep(&["run", file.to_str().unwrap(), "--cache-dir", "cache", "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("features: computed and cached"), "{}", stderr(&out));
        // Each job's best valid accuracy and id, in lr order.
        let mut rows: Vec<(f64, f64, String)> = json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let acc = r["best_valid_acc"].as_f64().unwrap();
                (r["lr"].as_f64().unwrap(), acc, r["job_id"].as_str().unwrap().to_owned())
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.into_iter().map(|(_, acc, id)| (acc, id)).collect::<Vec<_>>()
    };
    let full = run("f32.toml", &sweep("f32", ""));
    let entries = |dir: &std::path::Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect();
        v.sort();
        v
    };
    let before = entries(&env.path("cache"));
    assert_eq!(before.len(), 1);
    let half = run("f16.toml", &sweep("f16", "feature_dtype = \"f16\"\n"));
    let after = entries(&env.path("cache"));
    assert_eq!(after.len(), 2, "f16 features are an entry of their own: {after:?}");
    let f16_entry = after.iter().find(|e| *e != &before[0]).unwrap();
    // 400 images x 512 floats: 800 KiB of data against 400 KiB, the same header.
    assert_eq!(before[0].1 - f16_entry.1, 400 * 512 * 2, "{before:?} {after:?}");
    assert_eq!(full.len(), 2);
    for ((acc32, id32), (acc16, id16)) in full.iter().zip(&half) {
        assert_ne!(id32, id16, "f16 jobs have ids of their own");
        assert!((acc32 - acc16).abs() <= 0.02, "best valid accuracy f32 {acc32}, f16 {acc16}");
    }
}

/// Issue 17: `dtype = "bf16"` on the CPU. Where the CPU has AMX bf16 tiles
/// or AVX-512 BF16 it computes in bf16: no note, features of their own (a
/// cache entry that f32 does not reuse). Elsewhere, or with
/// `SWEEP_CPU_BF16=off` (Candle's CPU
/// matrix product refuses bf16: the run used to fail after registering
/// the sweep), it computes in f32 and says so in one line: the same
/// features as `dtype = "f32"`, from the same cache entry, and the same
/// results. How close bf16's features are to f32's is
/// `crates/worker/tests/bf16.rs`'s.
#[test]
fn bf16_on_the_cpu_computes_in_bf16_or_says_why_not() {
    let env = Env::new();
    let sweep = |extra: &str| {
        format!(
            "name = \"bf\"\n[data]\nlayout = \"synthetic\"\nclasses = 3\nimages = 60\nwidth = 32\nheight = 32\n\
             valid_fraction = 0.25\n[model]\nbackbone = \"resnet18\"\nweights = \"random\"\nimage_size = 32\n{extra}\
             [train]\nbatch_size = 8\nepochs = 2\nlr = 0.01\n"
        )
    };
    let run = |db: &str, file: &str, text: &str, vars: &[(&str, &str)]| {
        let file = env.write(file, text);
        let args = ["--db", db, "run", file.to_str().unwrap(), "--cache-dir", "cache", "--format", "json"];
        let out = env.sweep_with(&args, vars);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let scores = |out: &std::process::Output| -> Vec<(serde_json::Value, serde_json::Value)> {
        json(out).as_array().unwrap().iter().map(|r| (r["best_valid_acc"].clone(), r["best_epoch"].clone())).collect()
    };
    let entries = || std::fs::read_dir(env.path("cache")).unwrap().count();
    let says_f32 = |out: &std::process::Output| {
        // Why (no AVX-512 BF16, Linux's refusal, SWEEP_CPU_BF16), then what
        // instead.
        let err = stderr(out);
        let note: Vec<&str> = err.lines().filter(|l| l.contains("dtype bf16: ")).collect();
        assert_eq!(note.len(), 1, "{err}");
        assert!(note[0].ends_with(", so the backbone computes in f32"), "{err}");
    };

    // Without a bf16 kernel: f32's features, said once, under f32's entry.
    let off = run("off.db", "bf16.toml", &sweep("dtype = \"bf16\"\n"), &[("SWEEP_CPU_BF16", "off")]);
    says_f32(&off);
    assert!(stderr(&off).contains("SWEEP_CPU_BF16 is off"), "{}", stderr(&off));
    assert!(stderr(&off).contains("features: computed and cached"), "{}", stderr(&off));
    let f32 = run("f32.db", "f32.toml", &sweep(""), &[]);
    assert!(stderr(&f32).contains("reused from the cache"), "{}", stderr(&f32));
    assert!(!stderr(&f32).contains("dtype bf16"), "{}", stderr(&f32));
    assert_eq!(scores(&off), scores(&f32));
    assert_eq!(entries(), 1);

    // As the machine allows.
    let bf16 = run("bf16.db", "bf16.toml", &sweep("dtype = \"bf16\"\n"), &[]);
    if let Ok(kernel) = sweep_worker::bf16_kernel() {
        eprintln!("dtype bf16 computes in bf16 here, on {}", kernel.name());
        assert!(!stderr(&bf16).contains("dtype bf16"), "{}", stderr(&bf16));
        assert!(stderr(&bf16).contains("features: computed and cached"), "{}", stderr(&bf16));
        assert_eq!(entries(), 2);
        assert_eq!(scores(&bf16).len(), scores(&f32).len());
    } else {
        eprintln!("this CPU has no bf16 kernel: dtype bf16 computes in f32");
        says_f32(&bf16);
        assert!(stderr(&bf16).contains("reused from the cache"), "{}", stderr(&bf16));
        assert_eq!(scores(&bf16), scores(&f32));
        assert_eq!(entries(), 1);
    }

    // Where the tiles are, the AVX-512 BF16 kernel (Zen 4's) runs too when
    // asked: bf16 too, no note, its features computed (its own cache here).
    if sweep_worker::bf16_kernel() == Ok(sweep_worker::Bf16Kernel::Amx) {
        let file = env.write("dots.toml", &sweep("dtype = \"bf16\"\n"));
        let args = ["--db", "dots.db", "run", file.to_str().unwrap(), "--cache-dir", "dots", "--format", "json"];
        let dots = env.sweep_with(&args, &[("SWEEP_CPU_BF16", "avx512")]);
        assert!(dots.status.success(), "{}", stderr(&dots));
        assert!(!stderr(&dots).contains("dtype bf16"), "{}", stderr(&dots));
        assert!(stderr(&dots).contains("features: computed and cached"), "{}", stderr(&dots));
        assert_eq!(scores(&dots).len(), scores(&bf16).len());
    }
    // And a value it does not know is said, not ignored.
    let odd = run("odd.db", "bf16.toml", &sweep("dtype = \"bf16\"\n"), &[("SWEEP_CPU_BF16", "tiles")]);
    says_f32(&odd);
    assert!(stderr(&odd).contains("SWEEP_CPU_BF16 is none of amx, avx512 and off"), "{}", stderr(&odd));
}
