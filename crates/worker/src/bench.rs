//! Throughput measurements of the worker's three stages, shared by
//! `sweep bench` and the bench binaries: decode + preprocess, the backbone
//! pass, and one epoch of head training.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backbone::{Arch, Backbone, DType, ModelConfig, Weights};
use crate::data::split;
use crate::features::decode_image;
use crate::preprocess::{preprocess, Transform};
use crate::train::{train, EpochReport, EpochSink, Loss, SinkError, TrainConfig, TrainJob, TrainState};
use crate::Error;

/// Images per second that `threads` threads decode and preprocess `paths` at.
pub fn decode_throughput(paths: &[PathBuf], transform: &Transform, threads: usize) -> Result<f64, Error> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<(), Error> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    let mut out = vec![0f32; transform.len()];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { return Ok(()) };
                        preprocess(&decode_image(path)?, transform, &mut out);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("decode threads do not panic")?;
        }
        Ok(())
    })?;
    Ok(paths.len() as f64 / start.elapsed().as_secs_f64())
}

/// Images per second that `threads` threads check before a backbone pass
/// (each file read whole, its structure walked, no pixel decoded: what
/// [`crate::check_images`] does), the files already in the page cache or not.
pub fn check_throughput(paths: &[PathBuf], threads: usize) -> Result<f64, Error> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let bytes = std::fs::read(path).unwrap_or_default();
                    std::hint::black_box(crate::image_check::inspect(&bytes).is_ok());
                }
            });
        }
    });
    Ok(paths.len() as f64 / start.elapsed().as_secs_f64())
}

/// Images per second of the backbone's forward pass on random weights, over
/// `batches` batches after one warm-up batch.
pub fn backbone_throughput(
    arch: Arch,
    dtype: DType,
    image_size: usize,
    batch: usize,
    batches: usize,
    device: &Device,
) -> Result<f64, Error> {
    let cfg = ModelConfig {
        arch,
        weights: Weights::Random { seed: 0 },
        image_size,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channel_order: crate::ChannelOrder::Rgb,
        dtype,
    };
    let backbone = Backbone::load(&cfg, device)?;
    let xs = Tensor::randn(0f32, 1f32, (batch, 3, image_size, image_size), device)?;
    backbone.forward(&xs)?;
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..batches {
        backbone.forward(&xs)?;
    }
    device.synchronize()?;
    Ok((batch * batches) as f64 / start.elapsed().as_secs_f64())
}

/// Collects each epoch's seconds.
struct EpochTimes(Vec<f64>);

impl EpochSink for EpochTimes {
    fn epoch(&mut self, report: &EpochReport, _: &TrainState) -> Result<(), SinkError> {
        self.0.push(report.seconds);
        Ok(())
    }
}

/// Seconds of each of `epochs` head-training epochs (training and validation,
/// as `EpochReport::seconds` counts them) on seeded random features: `n`
/// samples of `dim` (post-ReLU-like, in [0, 1)), `classes` random labels, the
/// paper's 90/10 split, SGD(lr 0.01, momentum 0.9), cross-entropy.
pub fn head_epoch_seconds(
    n: usize,
    dim: usize,
    classes: usize,
    batch_size: usize,
    epochs: usize,
    device: &Device,
) -> Result<Vec<f64>, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let features: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    let features = Tensor::from_vec(features, (n, dim), &Device::Cpu)?;
    let split = split(n, 0.1, 0)?;
    let cfg = TrainConfig {
        batch_size,
        lr: 0.01,
        momentum: 0.9,
        epochs,
        weight_decay: 0.0,
        step_size: 15,
        gamma: 0.1,
        seed: 0,
        loss: Loss::CrossEntropy,
    };
    let mut times = EpochTimes(Vec::with_capacity(epochs));
    let job =
        TrainJob { features: &features, labels: &labels, classes, split: &split, config: &cfg, resume: None, device };
    train(job, &mut times)?;
    Ok(times.0)
}
