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
use crate::features::{decode_image, FeatureCache, FeatureMatrix};
use crate::preprocess::{preprocess, Transform};
use crate::train::{
    train_with, EpochReport, EpochSink, HeadKernel, Hooks, Loss, SinkError, TrainConfig, TrainJob, TrainState,
};
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
        feature_dtype: crate::FeatureDType::F32,
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
/// paper's 90/10 split, SGD(lr 0.01, momentum 0.9), cross-entropy, trained
/// by `kernel` (`HeadKernel::Auto`: what `sweep run` uses on `device`).
pub fn head_epoch_seconds(
    n: usize,
    dim: usize,
    classes: usize,
    batch_size: usize,
    epochs: usize,
    device: &Device,
    kernel: HeadKernel,
) -> Result<Vec<f64>, Error> {
    let (features, labels, split) = head_data(n, dim, classes)?;
    let cfg = TrainConfig { batch_size, epochs, ..head_config() };
    let mut times = EpochTimes(Vec::with_capacity(epochs));
    let job =
        TrainJob { features: &features, labels: &labels, classes, split: &split, config: &cfg, resume: None, device };
    train_with(job, &mut times, Hooks { kernel, ..Hooks::default() })?;
    Ok(times.0)
}

/// The head benches' data: `n` random samples of `dim` (post-ReLU-like, in
/// [0, 1)), `classes` random labels, the paper's 90/10 split.
fn head_data(n: usize, dim: usize, classes: usize) -> Result<(FeatureMatrix, Vec<u32>, crate::data::Split), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let features: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    Ok((FeatureMatrix::from_vec(features, n, dim)?, labels, split(n, 0.1, 0)?))
}

/// Writes the entry `key` of `rows` × `dim` seeded random features
/// (post-ReLU-like, in [0, 1)), stored as `dtype`, into `cache`, made and written 4096 rows at a
/// time: a million images' entry without a million-image pass, in the
/// memory of one block.
pub fn write_random_features(
    cache: &FeatureCache,
    key: &str,
    rows: usize,
    dim: usize,
    dtype: crate::FeatureDType,
    seed: u64,
) -> Result<(), Error> {
    const BLOCK: usize = 4096;
    let blocks = (0..rows.div_ceil(BLOCK)).map(|b| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(b as u64);
        let n = BLOCK.min(rows - b * BLOCK);
        (0..n * dim).map(|_| rng.random::<f32>()).collect::<Vec<f32>>()
    });
    cache.store(key, rows, dim, dtype, blocks)
}

/// The head benches' training: the paper's SGD(lr 0.01, momentum 0.9),
/// StepLR(15, 0.1), cross-entropy.
fn head_config() -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        lr: 0.01,
        momentum: 0.9,
        epochs: 1,
        weight_decay: 0.0,
        step_size: 15,
        gamma: 0.1,
        seed: 0,
        loss: Loss::CrossEntropy,
    }
}

/// Seconds per epoch of `k` heads trained in lockstep on one thread (each
/// batch gathered once, each head stepped in turn) on the features of
/// [`head_epoch_seconds`]: divided by `k`, a trial's cost when fused.
pub fn lockstep_epoch_seconds(
    n: usize,
    dim: usize,
    classes: usize,
    k: usize,
    epochs: usize,
) -> Result<Vec<f64>, Error> {
    let (features, labels, split) = head_data(n, dim, classes)?;
    let cfg = TrainConfig { batch_size: 16, epochs, ..head_config() };
    let (seconds, losses) = crate::train::lockstep_seconds(&features, &labels, classes, &split, &cfg, k)?;
    if let Some(bad) = losses.iter().find(|l| !l.is_finite()) {
        return Err(Error::State(format!("a lockstep head diverged: loss {bad}")));
    }
    Ok(seconds)
}

/// Arithmetic in one ResNet-50 forward pass at 224 px: 4.09 G multiply-adds
/// (torchvision's count), two operations each.
pub const RESNET50_FLOP_PER_IMAGE: f64 = 2.0 * 4.09e9;

/// Arithmetic in one head epoch: the forward product and the weight
/// gradient over the training rows, the forward product over the valid rows
/// (a multiply-add is two operations; the loss and the step are not counted).
pub fn head_epoch_flop(train: usize, valid: usize, dim: usize, classes: usize) -> f64 {
    2.0 * (dim * classes) as f64 * (2 * train + valid) as f64
}

/// The f32 arithmetic peak of one core, found at run time: the widest vector
/// instruction set the CPU has, two fused multiply-add units (two operations
/// each) of that width a cycle, at the clock `/proc/cpuinfo` reports (the
/// nominal clock; boost runs faster, so a fraction of peak can pass 1). AMD's
/// Zen 4 (family 0x19) runs AVX-512 on 256-bit units: 32 operations a cycle,
/// as with AVX2.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// `avx512`, `avx2` or `sse2`.
    pub isa: &'static str,
    /// f32 operations a cycle on one core.
    pub flop_per_cycle: u32,
    /// The clock, when the system says it.
    pub ghz: Option<f64>,
}

impl Peak {
    /// This machine's.
    pub fn detect() -> Peak {
        #[cfg(target_arch = "x86_64")]
        let (avx512, avx2) = (
            std::arch::is_x86_feature_detected!("avx512f"),
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
        );
        #[cfg(not(target_arch = "x86_64"))]
        let (avx512, avx2) = (false, false);
        Peak::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(), avx512, avx2)
    }

    fn from_cpuinfo(cpuinfo: &str, avx512: bool, avx2: bool) -> Peak {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
        };
        let zen4 =
            field("vendor_id").as_deref() == Some("AuthenticAMD") && field("cpu family").as_deref() == Some("25");
        let (isa, flop_per_cycle) = match (avx512, avx2) {
            (true, _) if zen4 => ("avx512", 32),
            (true, _) => ("avx512", 64),
            (false, true) => ("avx2", 32),
            (false, false) => ("sse2", 16),
        };
        let ghz = field("cpu MHz").and_then(|m| m.parse::<f64>().ok()).filter(|m| *m > 0.0).map(|m| m / 1000.0);
        Peak { isa, flop_per_cycle, ghz }
    }

    /// Billions of f32 operations a second on `cores` cores, if the clock is known.
    pub fn gflops(&self, cores: usize) -> Option<f64> {
        self.ghz.map(|ghz| ghz * f64::from(self.flop_per_cycle) * cores as f64)
    }
}

/// f32 GFLOP/s that `threads` threads sustain together, each running the
/// head kernels' widest multiply-adds (12 independent chains, no memory):
/// the peak measured, with the clock the cores really run at under that
/// load and as many multiply-add units as they really have, where [`Peak`]
/// assumes both. Each thread keeps its best of 5 windows of 0.1 s (a
/// neighbour on a shared machine only ever lowers a window's rate). `None`
/// without AVX2 or AVX-512.
pub fn measured_gflops(threads: usize) -> Option<f64> {
    best_windows_together(threads, crate::train::fma_gflops)
}

/// bf16 GFLOP/s that `threads` threads sustain together on the bf16
/// backbone's kernel (AMX: four independent `tdpbf16ps` accumulators a
/// thread; AVX-512 BF16: sixteen `vdpbf16ps`; no memory), each its best of
/// 5 windows of 0.1 s: the peak the bf16 backbone is measured against.
/// `None` where bf16 computes in f32.
pub fn measured_bf16_gflops(threads: usize) -> Option<f64> {
    best_windows_together(threads, crate::backbone::bf16_peak_gflops)
}

/// f32 GFLOP/s that `threads` threads sustain together on the f32
/// backbone's convolution kernel alone (a block of 18 steps in L2, no
/// gather, no epilogue), each its best of 5 windows of 0.1 s: the ceiling
/// of the pass's products on this CPU. `None` without AVX-512.
pub fn measured_f32_kernel_gflops(threads: usize) -> Option<f64> {
    best_windows_together(threads, crate::backbone::f32_block_gflops)
}

/// `rate` (GFLOP/s over a window of the seconds it is given) on `threads`
/// threads at once, each keeping its best of 5 windows of 0.1 s; summed.
fn best_windows_together(threads: usize, rate: fn(f64) -> Option<f64>) -> Option<f64> {
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    (0..5).map(|_| rate(0.1)).reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))?
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().expect("a peak loop does not panic")).sum()
    })
}

/// The threads the backbone pass computes on: `RAYON_NUM_THREADS`, else
/// one a CPU (Candle's rule).
pub fn compute_threads() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_follows_the_instruction_set_the_vendor_and_the_clock() {
        let zen4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2596.140\n";
        let peak = Peak::from_cpuinfo(zen4, true, true);
        assert_eq!((peak.isa, peak.flop_per_cycle), ("avx512", 32));
        assert!((peak.gflops(2).unwrap() - 2.59614 * 32.0 * 2.0).abs() < 1e-9);
        let sapphire = "vendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2100.000\n";
        assert_eq!(Peak::from_cpuinfo(sapphire, true, true).flop_per_cycle, 64);
        assert_eq!(Peak::from_cpuinfo(sapphire, false, true).flop_per_cycle, 32);
        assert_eq!(Peak::from_cpuinfo("", false, false), Peak { isa: "sse2", flop_per_cycle: 16, ghz: None });
        assert_eq!(Peak::from_cpuinfo("", false, false).gflops(2), None);
        // The paper's head epoch: 9,200 train and 1,022 valid rows.
        assert!((head_epoch_flop(9_200, 1_022, 2048, 120) / 1e9 - 9.546).abs() < 1e-3);
    }
}
