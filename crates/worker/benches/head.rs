//! Seconds per epoch of head training at the paper's scale: 10,222 cached
//! features of width 2048 (9,200 train, 1,022 valid), 120 classes, batch 16
//! (575 steps an epoch), SGD(lr=0.01, momentum=0.9), cross-entropy.
//!
//! `cargo bench -p sweep-worker --bench head` (release); compare with
//! `python3 bench/pytorch_head.py`, run alternately on the same machine.
//! `HEAD_BENCH_EPOCHS` sets the epochs timed (3).

#![allow(missing_docs, clippy::print_stdout)]

use std::time::Instant;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sweep_worker::{split, train, Device, EpochReport, EpochSink, Loss, SinkError, TrainConfig, TrainState};

struct Times(Vec<f64>);

impl EpochSink for Times {
    fn epoch(&mut self, report: &EpochReport, _state: &TrainState) -> Result<(), SinkError> {
        self.0.push(report.seconds);
        Ok(())
    }
}

fn main() {
    let (n, dim, classes) = (10_222, 2048, 120);
    let epochs: usize = std::env::var("HEAD_BENCH_EPOCHS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Post-ReLU-like features: non-negative, mean about 0.5, as a ResNet's pooled output.
    let features: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    let features = Tensor::from_vec(features, (n, dim), &Device::Cpu).unwrap();
    let split = split(n, 0.1, 0).unwrap();
    let cfg = TrainConfig {
        batch_size: 16,
        lr: 0.01,
        momentum: 0.9,
        epochs,
        weight_decay: 0.0,
        step_size: 15,
        gamma: 0.1,
        seed: 0,
        loss: Loss::CrossEntropy,
    };
    let mut sink = Times(Vec::new());
    let started = Instant::now();
    train(&features, &labels, classes, &split, &cfg, None, &mut sink, &Device::Cpu).unwrap();
    let total = started.elapsed().as_secs_f64();
    let per_epoch: Vec<String> = sink.0.iter().map(|s| format!("{s:.3}")).collect();
    println!(
        "candle head: {n_train} x {dim}, {classes} classes, batch 16: {:.3} s/epoch (epochs: {}; total {total:.2} s)",
        sink.0.iter().sum::<f64>() / sink.0.len() as f64,
        per_epoch.join(" "),
        n_train = split.train.len(),
    );
}
