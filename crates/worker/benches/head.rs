//! Seconds per epoch of head training at the paper's scale: 10,222 cached
//! features of width 2048 (9,200 train, 1,022 valid), 120 classes, batch 16
//! (575 steps an epoch), SGD(lr=0.01, momentum=0.9), cross-entropy, each
//! epoch with its valid pass.
//!
//! `cargo bench --bench head` (release) times the head kernels sweep uses on
//! a CPU (`train/kernel.rs`: one job on one thread, and with
//! `RAYON_NUM_THREADS` = T > 1, T jobs at once, one a thread, as a sweep runs
//! them) and Candle's ops (one job on T threads), alternately, medians of
//! `HEAD_BENCH_EPOCHS` epochs (3); `--pytorch` also runs
//! `python3 bench/pytorch_head.py` (one job on T threads) in the same loop,
//! so the ratios are of one session under one load. `HEAD_BENCH_ROUNDS` (3)
//! sets how many times each side runs. `--lockstep` then times K heads
//! trained in lockstep on one thread (K = 1, 8, 64, 256: fused heads), per
//! trial, against one head alone.

#![allow(missing_docs, clippy::print_stdout)]

use std::process::Command;

use sweep_worker::{bench, Device, HeadKernel};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// PyTorch's seconds per epoch, from the script's last line.
fn pytorch(epochs: usize, threads: usize) -> Option<f64> {
    let out = Command::new("python3")
        .args(["bench/pytorch_head.py", "--epochs", &epochs.to_string(), "--threads", &threads.to_string()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rfind(|l| l.starts_with("pytorch head:"))?;
    let times = line.split("epochs: ").nth(1)?.split(';').next()?;
    let times: Vec<f64> = times.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    (!times.is_empty()).then(|| median(times))
}

fn main() {
    let (n, dim, classes) = (10_222, 2048, 120);
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let epochs = env("HEAD_BENCH_EPOCHS", 3);
    let rounds = env("HEAD_BENCH_ROUNDS", 3);
    let threads = env("RAYON_NUM_THREADS", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let with_pytorch = std::env::args().any(|a| a == "--pytorch");
    let with_lockstep = std::env::args().any(|a| a == "--lockstep");
    let (mut ours, mut many, mut candle, mut torch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let k = median(bench::head_epoch_seconds(n, dim, classes, 16, epochs, &Device::Cpu, HeadKernel::Auto).unwrap());
        if threads > 1 {
            // T jobs at once: each thread's first epoch overlaps the others'
            // set-up, so it is left out; seconds per head-epoch are the
            // epochs' median over T.
            let times: Vec<f64> = std::thread::scope(|s| {
                let jobs: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            bench::head_epoch_seconds(n, dim, classes, 16, epochs + 1, &Device::Cpu, HeadKernel::Auto)
                        })
                    })
                    .collect();
                jobs.into_iter().flat_map(|j| j.join().unwrap().unwrap().into_iter().skip(1)).collect()
            });
            let m = median(times) / threads as f64;
            println!("round {round}: kernels, {threads} jobs at once: {m:.3} s a head-epoch");
            many.push(m);
        }
        let c =
            median(bench::head_epoch_seconds(n, dim, classes, 16, epochs, &Device::Cpu, HeadKernel::Candle).unwrap());
        let t = if with_pytorch { pytorch(epochs, threads) } else { None };
        println!(
            "round {round}: kernels (1 thread) {k:.3} s, candle ({threads} threads) {c:.3} s{}",
            t.map(|t| format!(", pytorch ({threads} threads) {t:.3} s")).unwrap_or_default()
        );
        ours.push(k);
        candle.push(c);
        torch.extend(t);
    }
    let (k, c) = (median(ours), median(candle));
    println!("head epoch, {n} x {dim} (90% train), {classes} classes, batch 16, medians of {rounds}:");
    println!("  kernels, 1 thread:        {k:.3} s");
    // The kernels at the thread count the others use.
    let mut same = k;
    if !many.is_empty() {
        same = median(many);
        println!("  kernels, {threads} jobs at once:  {same:.3} s a head-epoch  ({:.2}x one job's)", same / k);
    }
    println!("  candle, {threads} threads:        {c:.3} s  ({:.2}x the kernels' at {threads} threads)", c / same);
    if !torch.is_empty() {
        let t = median(torch);
        println!("  pytorch, {threads} threads:       {t:.3} s  ({:.2}x the kernels' at {threads} threads)", t / same);
    }
    if with_lockstep {
        println!("fused heads (K in lockstep on one thread), seconds per trial-epoch, medians of {rounds}:");
        for k in [1, 8, 64, 256] {
            let mut per_trial = Vec::new();
            for _ in 0..rounds {
                let alone =
                    median(bench::head_epoch_seconds(n, dim, classes, 16, 2, &Device::Cpu, HeadKernel::Auto).unwrap());
                let fused = median(bench::lockstep_epoch_seconds(n, dim, classes, k, 1).unwrap()) / k as f64;
                per_trial.push((fused, alone));
            }
            let fused = median(per_trial.iter().map(|p| p.0).collect());
            let alone = median(per_trial.iter().map(|p| p.1).collect());
            println!("  K = {k:>3}: fused {fused:.3} s, alone {alone:.3} s  (fused / alone {:.2})", fused / alone);
        }
    }
}
