//! Seconds per epoch of head training at the paper's scale: 10,222 cached
//! features of width 2048 (9,200 train, 1,022 valid), 120 classes, batch 16
//! (575 steps an epoch), SGD(lr=0.01, momentum=0.9), cross-entropy.
//!
//! `cargo bench -p sweep-worker --bench head` (release); compare with
//! `python3 bench/pytorch_head.py`, run alternately on the same machine.
//! `HEAD_BENCH_EPOCHS` sets the epochs timed (3).

#![allow(missing_docs, clippy::print_stdout)]

use sweep_worker::{bench, Device};

fn main() {
    let (n, dim, classes) = (10_222, 2048, 120);
    let epochs: usize = std::env::var("HEAD_BENCH_EPOCHS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seconds = bench::head_epoch_seconds(n, dim, classes, 16, epochs, &Device::Cpu).unwrap();
    let per_epoch: Vec<String> = seconds.iter().map(|s| format!("{s:.3}")).collect();
    println!(
        "candle head: {n} x {dim} (90% train), {classes} classes, batch 16: {:.3} s/epoch (epochs: {})",
        seconds.iter().sum::<f64>() / seconds.len() as f64,
        per_epoch.join(" "),
    );
}
