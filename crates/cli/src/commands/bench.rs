//! `sweep bench`: the figures of BENCHMARKS.md on data of the paper's size
//! (10,222 JPEGs of 500x375 in 120 classes by default), as one JSON object:
//! decode images/s, backbone images/s per dtype, head seconds per epoch, and
//! the six configurations of `sweeps/seed-table.toml` end to end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use sweep_scheduler::{Observer, RunOptions, SweepSpec};
use sweep_worker::{bench, Arch, CacheOutcome, DType, HeadKernel, Transform};
use tokio_util::sync::CancellationToken;

use crate::args::{BenchArgs, SynthArgs};
use crate::Outcome;

/// The seed table's six configurations (sweeps/seed-table.toml), on `root`.
fn seed_table(root: &Path, dtype: &str) -> String {
    let configs = [
        (16, 2, 0.01, 0.9),
        (16, 4, 0.001, 0.9),
        (16, 4, 0.1, 0.8),
        (16, 2, 0.04, 0.9),
        (16, 2, 0.05, 0.9),
        (8, 2, 0.01, 0.9),
    ];
    let mut s = format!(
        "name = \"bench-seed-table\"\n[data]\nlayout = \"kaggle\"\nroot = {root:?}\n[model]\nbackbone = \"resnet50\"\nweights = \"random\"\ndtype = \"{dtype}\"\n[train]\nepochs = 14\n"
    );
    for (batch_size, workers, lr, momentum) in configs {
        s.push_str(&format!(
            "[[configs]]\nbatch_size = {batch_size}\nworkers = {workers}\nlr = {lr}\nmomentum = {momentum}\n"
        ));
    }
    s
}

#[derive(Default)]
struct Timeline {
    features_started: Option<Instant>,
    features_done: Option<Instant>,
    reused: Option<bool>,
}

struct Clock(Mutex<Timeline>);

impl Observer for Clock {
    fn features_started(&self, _images: usize) {
        self.0.lock().expect("clock").features_started = Some(Instant::now());
    }
    fn features_done(&self, outcome: &CacheOutcome) {
        let mut t = self.0.lock().expect("clock");
        t.features_done = Some(Instant::now());
        t.reused = Some(*outcome == CacheOutcome::Hit);
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<Outcome> {
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("sweep-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("{}: cannot create", work.display()))?;
    let data = args.data.clone().unwrap_or_else(|| work.join("data"));
    if !data.join("labels.csv").exists() {
        eprintln!("bench: generating {} images of {}x{} in {}", args.images, args.width, args.height, data.display());
        super::synth::synth(&SynthArgs {
            out: data.clone(),
            classes: args.classes,
            images: args.images,
            width: args.width,
            height: args.height,
            seed: 0,
            quality: 90,
        })?;
    }
    let device = sweep_worker::device(&args.device)?;
    let threads = bench::compute_threads();
    let peak = bench::Peak::detect();
    // The multiply-add rate one core, and the pass's `threads` together, sustain.
    let measured = [bench::measured_gflops(1), bench::measured_gflops(threads)];
    let mut out = json!({
        "tool": "sweep",
        "version": env!("CARGO_PKG_VERSION"),
        "device": args.device,
        "threads": threads,
        "data": data.display().to_string(),
        "cpu_peak": {
            "isa": peak.isa,
            "flop_per_cycle_per_core": peak.flop_per_cycle,
            "clock_ghz": peak.ghz,
            "gflops_per_core": peak.gflops(1),
            "how": "f32 peak = the widest vector ISA detected at run time x 2 FMA units x 2 operations a \
                    multiply-add x the clock /proc/cpuinfo reports (nominal; boost can pass it); AMD Zen 4 \
                    runs AVX-512 on 256-bit units",
            "measured_gflops_per_core": measured[0],
            "measured_gflops_all_threads": measured[1],
            "measured_how": "each thread runs 12 independent chains of the widest fused multiply-adds \
                    (no memory), all threads at once, and keeps its best of 5 windows of 0.1 s; the \
                    *_measured_peak_fraction fields divide by it: the clock the cores really run at and \
                    the FMA units they really have",
        },
    });
    // The share of the CPU's f32 peak that `gflops` reaches on `cores` cores.
    let fraction = |gflops: f64, cores: usize| {
        if device.is_cpu() {
            peak.gflops(cores).map(|p| gflops / p)
        } else {
            None
        }
    };

    let measured_fraction =
        |gflops: f64, peak: Option<f64>| if device.is_cpu() { peak.map(|p| gflops / p) } else { None };

    // Decode + preprocess of the real files, per thread count.
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(data.join("train"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    paths.sort();
    paths.truncate(args.decode_images);
    let transform = Transform {
        size: 224,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: sweep_worker::ChannelOrder::Rgb,
    };
    for threads in [1, 2] {
        eprintln!("bench: image check with {threads} thread(s)");
        let rate = bench::check_throughput(&paths, threads)?;
        out[format!("check_images_per_second_{threads}_threads")] = json!(rate);
    }
    for threads in [1, 2] {
        eprintln!("bench: decode with {threads} thread(s)");
        let rate = bench::decode_throughput(&paths, &transform, threads)?;
        out[format!("decode_images_per_second_{threads}_threads")] = json!(rate);
    }

    // The backbone alone, per dtype.
    for dtype in &args.dtypes {
        let dt = match dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            other => anyhow::bail!("--dtypes: unknown dtype `{other}` (f32, f16, bf16)"),
        };
        if let (_, Some(note)) = dt.on_device(&args.device) {
            // The pass would be f32's, measured as such.
            eprintln!("bench: {note}: skipped");
            continue;
        }
        eprintln!("bench: resnet50 backbone, {dtype}, batch {}", args.backbone_batch);
        let rate =
            bench::backbone_throughput(Arch::Resnet50, dt, 224, args.backbone_batch, args.backbone_batches, &device)
                .with_context(|| format!("backbone in {dtype}"))?;
        out[format!("backbone_images_per_second_{dtype}")] = json!(rate);
        let achieved = rate * bench::RESNET50_FLOP_PER_IMAGE / 1e9;
        if dtype == "f32" {
            out["backbone_peak_fraction_f32"] = json!(fraction(achieved, threads));
            out["backbone_measured_peak_fraction_f32"] = json!(measured_fraction(achieved, measured[1]));
            if device.is_cpu() {
                // What the kernel alone reaches: the pass's products cannot beat it.
                let kernel = bench::measured_f32_kernel_gflops(threads);
                out["cpu_peak"]["measured_f32_kernel_gflops_all_threads"] = json!(kernel);
                out["backbone_kernel_measured_peak_fraction_f32"] =
                    json!(kernel.and_then(|k| measured_fraction(k, measured[1])));
                out["backbone_share_of_kernel_f32"] = json!(kernel.map(|k| achieved / k));
            }
        }
        if dtype == "bf16" && device.is_cpu() {
            // Against what its kernel sustains, measured.
            let peak = bench::measured_bf16_gflops(threads);
            let kernel = sweep_worker::bf16_kernel().map(|k| k.name()).ok();
            out["cpu_peak"]["bf16_kernel"] = json!(kernel);
            out["cpu_peak"]["measured_bf16_gflops_all_threads"] = json!(peak);
            out["cpu_peak"]["measured_bf16_how"] = json!(
                "each thread runs its kernel's instruction on independent accumulators, no memory \
                 (AMX: four tdpbf16ps, 16x16 outputs 32 deep; AVX-512 BF16: sixteen vdpbf16ps) \
                 and keeps its best of 5 windows of 0.1 s; backbone_measured_peak_fraction_bf16 divides by it"
            );
            out["backbone_measured_peak_fraction_bf16"] = json!(measured_fraction(achieved, peak));
        }
    }

    // One epoch of the head: 9,200 x 2048 features, 120 classes, batch 16.
    eprintln!("bench: head epochs");
    let mut head = bench::head_epoch_seconds(10_222, 2048, 120, 16, 3, &device, HeadKernel::Auto)?;
    head.sort_by(f64::total_cmp);
    let seconds = head[head.len() / 2];
    out["head_seconds_per_epoch"] = json!(seconds);
    // A CPU job trains on one thread where the kernels run, on all otherwise.
    let head_cores = if sweep_worker::heads_train_on_one_thread() { 1 } else { threads };
    let flop = bench::head_epoch_flop(9_200, 1_022, 2048, 120);
    out["head_peak_fraction"] = json!(fraction(flop / seconds / 1e9, head_cores));
    let head_measured = if head_cores == 1 { measured[0] } else { measured[1] };
    out["head_measured_peak_fraction"] = json!(measured_fraction(flop / seconds / 1e9, head_measured));

    if !args.skip_end_to_end {
        let file = work.join("seed-table.toml");
        std::fs::write(&file, seed_table(&std::path::absolute(&data)?, &args.dtypes[0]))?;
        let spec = SweepSpec::load(&file)?;
        let mut opts = RunOptions::new(work.join("bench.db"));
        opts.cache_dir = work.join("cache");
        opts.devices = vec![args.device.clone()];
        let _ = std::fs::remove_file(work.join("bench.db"));
        let _ = std::fs::remove_dir_all(&opts.cache_dir);
        let clock = Arc::new(Clock(Mutex::new(Timeline::default())));
        eprintln!("bench: the seed table's six jobs end to end");
        let start = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let summary = runtime.block_on(sweep_scheduler::run(
            spec,
            None,
            opts.clone(),
            clock.clone(),
            CancellationToken::new(),
        ))?;
        let total = start.elapsed().as_secs_f64();
        let t = clock.0.lock().expect("clock");
        let features = match (t.features_started, t.features_done) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => f64::NAN,
        };
        let store = sweep_store::Store::open(&opts.db)?;
        let jobs = store.jobs(&summary.sweep_id)?;
        out["end_to_end"] = json!({
            "jobs": jobs.len(),
            "done": summary.done,
            "seconds": total,
            "backbone_pass_seconds": features,
            "training_seconds": jobs.iter().map(|j| j.seconds).sum::<f64>(),
            "best_valid_acc": jobs.iter().map(|j| j.best_valid_acc.unwrap_or(0.0)).fold(0.0, f64::max),
        });
    }
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&out)?)?;
    Ok(Outcome::Success)
}
