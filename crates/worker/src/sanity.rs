//! The sanity check before a backbone pass: do the user's images, as
//! preprocessed, look to the backbone like what its weights were trained on?
//!
//! Every batch norm of a trained network holds the running mean and variance
//! of its input over the training data. On a few dozen of the user's images
//! (spread over the data set), each batch norm's input is standardised by
//! those statistics; preprocessed as the weights expect, each channel then
//! has mean near 0 and variance near 1. The divergence of a batch norm is the
//! median over its channels of the symmetric (Jeffreys') divergence between
//! `N(m, v)` and `N(0, 1)`, and the check's score the largest over the stem
//! and the first block (`layer1`): there the preprocessing shows first and
//! the kind of images matters least (deeper batch norms move with the
//! images' content).
//!
//! A wrong normalisation (another mean or std, pixels in 0-255) moves them
//! far over the limit on the project's fixtures. Two mistakes stay under it,
//! and are found by comparison instead:
//!
//! - a channel swap (BGR weights fed RGB, or the other way round): the
//!   stem's batch norm is evaluated on the images preprocessed in the other
//!   channel order too; when that matches its running statistics clearly
//!   better ([`SWAP_RATIO`], over [`SWAP_MIN`]), the channel order is blamed;
//! - the wrong ResNet-50 variant (v1 and v1.5 have the same tensors, and
//!   differ only in where `layer2`-`layer4`'s first block puts its stride:
//!   v1 on the first 1x1 convolution, v1.5 on the 3x3): `layer2`'s first
//!   block is run on the same `layer1` output with its stride in both
//!   places; when most channels of the batch norm after the 3x3
//!   convolution (`layer2.0.bn2`, whose input the stride changes) match the
//!   other variant better ([`VARIANT_SHARE`]) and its divergence is clearly
//!   smaller under it ([`VARIANT_RATIO`]), the backbone is blamed.
//!
//! The limit and the ratios are measured in `crates/worker/tests/sanity.rs`.
//!
//! Untrained weights (every running mean 0 and variance 1, as seeded random
//! weights are) have nothing to compare with: the check is skipped.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::backbone::{Arch, Backbone, BnStats, ModelConfig};
use crate::data::Dataset;
use crate::preprocess::{preprocess, Transform};
use crate::Error;

/// Images the check looks at (all of them in a smaller data set).
pub const SANITY_IMAGES: usize = 32;

/// The largest divergence a matching setup may show. Measured on the
/// project's fixtures (`crates/worker/tests/sanity.rs`): matching setups stay
/// under 0.13 (32 to 224 px), and under 1.01 with images of another kind than
/// the weights' (grey against colour); five wrong normalisations start at 2.0.
pub const SANITY_LIMIT: f64 = 1.4;

/// The channel swap is blamed when the stem's divergence in the order set
/// is over this many times the other order's (and over [`SWAP_MIN`]).
pub const SWAP_RATIO: f64 = 3.0;

/// The stem's divergence under which a channel swap is never blamed: a
/// matching setup's noise.
pub const SWAP_MIN: f64 = 0.2;

/// The other ResNet-50 variant is blamed when at least this share of
/// `layer2.0.bn2`'s channels (128) match their running statistics better
/// under the other variant's stride (and [`VARIANT_RATIO`] holds). With no
/// difference between the variants, half would, give or take 0.044 (a
/// binomial's standard deviation over 128). Measured in
/// `crates/worker/tests/sanity.rs`: matching setups reach 0.55, the wrong
/// variant 0.65 to 0.80.
pub const VARIANT_SHARE: f64 = 0.6;

/// ...and when `layer2.0.bn2`'s divergence as set is at least this many
/// times the other variant's. Measured: matching setups reach 1.01, the
/// wrong variant 1.5 to 4.
pub const VARIANT_RATIO: f64 = 1.4;

/// The batch norm the variant is judged by: the one after the 3x3
/// convolution of `layer2`'s first block, whose input the stride's place
/// changes (`bn1`'s hardly changes: a 1x1 convolution with a stride sees a
/// subsample of what it sees without).
pub const VARIANT_BN: &str = "layer2.0.bn2";

/// How `layer2.0.bn2` matches its running statistics under the two stride
/// placements (ResNet-50 only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantReport {
    /// Its divergence with the stride where the backbone in force puts it.
    pub set: f64,
    /// Its divergence with the stride where the other variant puts it.
    pub other: f64,
    /// The share of its channels whose divergence is smaller under the other variant.
    pub share: f64,
}

/// What the sanity check blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// The mean, the std or the pixels' scale: far over [`SANITY_LIMIT`].
    Normalisation,
    /// The channel order: the other one matches clearly better.
    ChannelOrder,
    /// The ResNet-50 variant (v1 or v1.5): the other one matches clearly better.
    Variant,
}

/// What the sanity check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Sanity {
    /// Not checked, and why (untrained weights).
    Skipped(String),
    /// Checked: within the limit.
    Passed(SanityReport),
    /// Checked: far outside what a matching setup gives.
    Failed(SanityReport),
}

/// The measures behind a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct SanityReport {
    /// Images looked at.
    pub images: usize,
    /// The stem's batch norm (`bn1`)'s divergence: the input's own.
    pub stem: f64,
    /// The largest divergence, and its batch norm.
    pub worst: (String, f64),
    /// The first batch norm over the limit, if any.
    pub first_over: Option<String>,
    /// The stem's divergence with the images in the other channel order.
    pub swapped_stem: f64,
    /// ResNet-50 only (when `layer2` has at least [`SANITY_MIN_SAMPLES`]
    /// values per channel): `layer2.0.bn2` under both variants.
    pub layer2: Option<VariantReport>,
    /// What a failure blames (`None`: passed).
    pub suspect: Option<Suspect>,
}

impl SanityReport {
    /// The likely cause of a failure, in words, with what to change.
    pub fn cause(&self, model: &ModelConfig) -> String {
        match self.suspect {
            Some(Suspect::ChannelOrder) => {
                let (set, other) = (model.channel_order, model.channel_order.swapped());
                format!(
                    "the first layer sees its colour channels swapped: likely the channel order (the weights look \
                     like they expect {}, {} is in force): set channel_order = \"{}\" in [model], with `mean` and \
                     `std` in that order",
                    other.name().to_uppercase(),
                    set.name().to_uppercase(),
                    other.name()
                )
            }
            Some(Suspect::Variant) => {
                let other = other_variant(model.arch).unwrap_or(model.arch);
                format!(
                    "these weights look like {} ({}), not {} as set: set backbone = \"{}\" in [model]",
                    other.name(),
                    stride_place(other),
                    model.arch.name(),
                    other.name()
                )
            }
            _ => {
                let triple =
                    |v: &[f64; 3]| format!("[{}]", v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(", "));
                let normalisation = format!("mean {}, std {}", triple(&model.mean), triple(&model.std));
                let layer = if self.stem > SANITY_LIMIT { "the first layer" } else { "the first block" };
                format!(
                    "{layer} sees its input off: likely the normalisation ({normalisation} in force; the weights may \
                     expect other values, pixels in 0-255, or BGR channels)"
                )
            }
        }
    }

    /// What the verdict rests on, in words.
    pub fn evidence(&self, model: &ModelConfig) -> String {
        let n = self.images;
        match (self.suspect, self.layer2) {
            (Some(Suspect::ChannelOrder), _) => format!(
                "on {n} images the first batch norm's input diverges from its training statistics by {:.2} in {} \
                 and by {:.2} in {}",
                self.stem,
                model.channel_order.name().to_uppercase(),
                self.swapped_stem,
                model.channel_order.swapped().name().to_uppercase()
            ),
            (Some(Suspect::Variant), Some(v)) => format!(
                "on {n} images {:.0}% of `{VARIANT_BN}`'s channels match their training statistics better as {} \
                 (divergence {:.3} as {}, {:.3} as {0})",
                100.0 * v.share,
                other_variant(model.arch).map_or("the other variant", Arch::name),
                v.set,
                model.arch.name(),
                v.other,
            ),
            _ => format!(
                "on {n} images the batch norms' inputs diverge from their training statistics by {:.2} at `{}` (a \
                 matching setup stays under {SANITY_LIMIT})",
                self.worst.1, self.worst.0
            ),
        }
    }
}

/// The other ResNet-50 variant (`None` for the others).
fn other_variant(arch: Arch) -> Option<Arch> {
    match arch {
        Arch::Resnet50 => Some(Arch::Resnet50V1),
        Arch::Resnet50V1 => Some(Arch::Resnet50),
        Arch::Resnet18 | Arch::Resnet34 => None,
    }
}

/// Where a ResNet-50 variant puts a downsampling block's stride, in words.
fn stride_place(arch: Arch) -> &'static str {
    match arch {
        Arch::Resnet50V1 => "the stride of layer2-4's first block on its first 1x1 convolution",
        _ => "the stride of layer2-4's first block on its 3x3 convolution",
    }
}

/// Indices of `k` images spread evenly over `n` (all of them when `n <= k`):
/// a folder-ordered data set is sampled across its classes.
pub fn sample_indices(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    (0..k).map(|i| i * n / k).collect()
}

/// The sanity check of `model` on `dataset` (see the module's text), with
/// its backbone already loaded: the same one the pass then uses.
pub fn sanity_check(
    dataset: &Dataset,
    model: &ModelConfig,
    backbone: &Backbone,
    device: &Device,
) -> Result<Sanity, Error> {
    if backbone.untrained() {
        return Ok(Sanity::Skipped(
            "the weights are untrained (every batch norm at mean 0, variance 1), so there is nothing to compare \
             the images with"
                .to_owned(),
        ));
    }
    let transform = model.transform();
    let indices = sample_indices(dataset.items.len(), SANITY_IMAGES);
    if indices.is_empty() {
        return Ok(Sanity::Skipped("the data set has no images".to_owned()));
    }
    let swapped = Transform { channel_order: transform.channel_order.swapped(), ..transform };
    let mut pixels = vec![0f32; indices.len() * transform.len()];
    let mut other = vec![0f32; indices.len() * transform.len()];
    for ((&i, out), alt) in indices.iter().zip(pixels.chunks_mut(transform.len())).zip(other.chunks_mut(swapped.len()))
    {
        let img = crate::features::decode(dataset, &dataset.items[i].source)?;
        preprocess(&img, &transform, out);
        preprocess(&img, &swapped, alt);
    }
    let shape = (indices.len(), 3, transform.size, transform.size);
    let xs = Tensor::from_vec(pixels, shape, device)?;
    let probe = backbone.probe(&xs)?;
    let (stem, worst, first_over) = summary(&divergences(&probe.stats));
    let swapped_stem = divergence(&backbone.stem_stats(&Tensor::from_vec(other, shape, device)?)?);
    let layer2 = probe.layer2.as_ref().and_then(|(set, other)| variant_report(set, other));
    let mut report =
        SanityReport { images: indices.len(), stem, worst, first_over, swapped_stem, layer2, suspect: None };
    report.suspect = verdict(&report);
    Ok(if report.suspect.is_some() { Sanity::Failed(report) } else { Sanity::Passed(report) })
}

/// What a report blames, if anything: the channel order when the other one
/// clearly matches better (and passes the stem), else the normalisation when
/// over the limit, else the ResNet-50 variant when the other one clearly
/// matches better.
pub fn verdict(report: &SanityReport) -> Option<Suspect> {
    let swap =
        report.stem > SWAP_MIN && report.stem > SWAP_RATIO * report.swapped_stem && report.swapped_stem <= SANITY_LIMIT;
    if swap {
        return Some(Suspect::ChannelOrder);
    }
    if report.worst.1 > SANITY_LIMIT {
        return Some(Suspect::Normalisation);
    }
    match report.layer2 {
        Some(v) if v.share >= VARIANT_SHARE && v.set >= VARIANT_RATIO * v.other => Some(Suspect::Variant),
        _ => None,
    }
}

/// [`VARIANT_BN`] under both variants, `None` when it has fewer than
/// [`SANITY_MIN_SAMPLES`] values per channel.
fn variant_report(set: &[BnStats], other: &[BnStats]) -> Option<VariantReport> {
    let find = |stats: &[BnStats]| stats.iter().find(|s| s.name == VARIANT_BN).cloned();
    let (a, b) = (find(set)?, find(other)?);
    if a.samples < SANITY_MIN_SAMPLES || b.samples < SANITY_MIN_SAMPLES || a.mean.is_empty() {
        return None;
    }
    let (da, db) = (channel_divergences(&a), channel_divergences(&b));
    let better = da.iter().zip(&db).filter(|(x, y)| y < x).count();
    Some(VariantReport { set: median(da), other: median(db), share: better as f64 / a.mean.len() as f64 })
}

/// Values per channel below which a batch norm's statistics are too noisy
/// to judge: left out.
pub const SANITY_MIN_SAMPLES: usize = 256;

/// Whether the check reads batch norm `name`: the stem's and the first
/// block's (`layer1`), before the first strided block. There the
/// preprocessing shows first, and the kind of images matters least: deeper
/// batch norms move with the images' content (on the fixtures, a matching
/// ResNet-50 at 224 px reaches 1.3 at `layer4`), so they are not read.
pub fn read_by_the_check(name: &str) -> bool {
    name == "bn1" || name.starts_with("layer1.")
}

/// The divergence of each batch norm the check reads ([`read_by_the_check`],
/// with at least [`SANITY_MIN_SAMPLES`] values per channel), in network order.
pub fn divergences(stats: &[BnStats]) -> Vec<(String, f64)> {
    stats
        .iter()
        .filter(|s| read_by_the_check(&s.name) && s.samples >= SANITY_MIN_SAMPLES)
        .map(|s| (s.name.clone(), divergence(s)))
        .collect()
}

/// The median over channels of the symmetric divergence (Jeffreys')
/// between `N(m, v)` and `N(0, 1)`: `(v + 1/v)/2 - 1 + m²(1 + 1/v)/2`. Symmetric,
/// so inputs spread 4 times too wide and 4 times too narrow weigh the same.
fn divergence(stats: &BnStats) -> f64 {
    median(channel_divergences(stats))
}

/// Each channel's divergence (see [`divergence`]).
fn channel_divergences(stats: &BnStats) -> Vec<f64> {
    stats
        .mean
        .iter()
        .zip(&stats.var)
        .map(|(&m, &v)| {
            let (m, v) = (f64::from(m), f64::from(v).max(1e-12));
            let j = 0.5 * (v + 1.0 / v) - 1.0 + 0.5 * m * m * (1.0 + 1.0 / v);
            if j.is_finite() {
                j
            } else {
                f64::MAX
            }
        })
        .collect()
}

/// The median (0 of none).
fn median(mut kl: Vec<f64>) -> f64 {
    if kl.is_empty() {
        return 0.0;
    }
    kl.sort_by(f64::total_cmp);
    let n = kl.len();
    if n % 2 == 1 {
        kl[n / 2]
    } else {
        (kl[n / 2 - 1] + kl[n / 2]) / 2.0
    }
}

/// The stem's divergence, the largest (and where), the first over the limit.
fn summary(divergences: &[(String, f64)]) -> (f64, (String, f64), Option<String>) {
    let stem = divergences.first().map_or(0.0, |(_, d)| *d);
    let worst =
        divergences.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned().unwrap_or_else(|| ("bn1".to_owned(), 0.0));
    let first_over = divergences.iter().find(|(_, d)| *d > SANITY_LIMIT).map(|(n, _)| n.clone());
    (stem, worst, first_over)
}

/// Seeded random weights ([`random_weights`](crate::random_weights)) whose
/// batch norms' running statistics are set to what each one sees of
/// `images`, preprocessed by `transform`: a stand-in for trained weights,
/// for tests, which a matching setup passes and a wrong one fails. One pass
/// in training mode sets them all (each layer's statistics depend on the
/// layers before it, calibrated first).
pub fn calibrated_weights(
    arch: Arch,
    seed: u64,
    images: &[image::RgbImage],
    transform: &Transform,
) -> Result<HashMap<String, Tensor>, Error> {
    calibrate(arch, seed, crate::random_weights(arch, seed)?, images, transform)
}

/// [`calibrated_weights`] with each residual branch's last batch norm
/// scaled by `gamma` first (its weight and bias), so that a branch adds a
/// fraction of the stream it joins instead of as much: seeded random
/// weights otherwise make a ResNet-50 amplify every small difference of its
/// input (see `tests/bf16.rs`). The stand-in for trained weights where a
/// test measures numerical error (the bf16 backbone against f32).
pub fn calibrated_weights_scaled(
    arch: Arch,
    seed: u64,
    gamma: f32,
    images: &[image::RgbImage],
    transform: &Transform,
) -> Result<HashMap<String, Tensor>, Error> {
    let mut tensors = crate::random_weights(arch, seed)?;
    let last = if arch.feature_dim() == 2048 { ".bn3." } else { ".bn2." };
    for (name, t) in tensors.iter_mut() {
        if name.starts_with("layer") && name.contains(last) && (name.ends_with("weight") || name.ends_with("bias")) {
            *t = t.affine(f64::from(gamma), 0.0)?;
        }
    }
    calibrate(arch, seed, tensors, images, transform)
}

fn calibrate(
    arch: Arch,
    seed: u64,
    mut tensors: HashMap<String, Tensor>,
    images: &[image::RgbImage],
    transform: &Transform,
) -> Result<HashMap<String, Tensor>, Error> {
    let mut pixels = vec![0f32; images.len() * transform.len()];
    for (img, out) in images.iter().zip(pixels.chunks_mut(transform.len())) {
        preprocess(img, transform, out);
    }
    let xs = Tensor::from_vec(pixels, (images.len(), 3, transform.size, transform.size), &Device::Cpu)?;
    let model = ModelConfig {
        arch,
        weights: crate::Weights::Random { seed },
        image_size: transform.size,
        mean: transform.mean,
        std: transform.std,
        channel_order: transform.channel_order,
        dtype: crate::DType::F32,
        feature_dtype: crate::FeatureDType::F32,
    };
    let backbone = Backbone::from_tensors(&model, tensors.clone(), &Device::Cpu)?;
    for s in backbone.calibration_stats(&xs)? {
        let mean_name = format!("{}.running_mean", s.name);
        let var_name = format!("{}.running_var", s.name);
        let rm: Vec<f32> = tensors[&mean_name].to_vec1()?;
        let rv: Vec<f32> = tensors[&var_name].to_vec1()?;
        let (mut new_mean, mut new_var) = (Vec::with_capacity(rm.len()), Vec::with_capacity(rm.len()));
        for c in 0..rm.len() {
            // torch's eps (1e-5) added back; the floor is the calibration's own.
            let sd = (rv[c] + 1e-5).sqrt();
            new_mean.push(s.mean[c] * sd + rm[c]);
            new_var.push(s.var[c].max(1e-4) * (rv[c] + 1e-5) - 1e-5);
        }
        let n = rm.len();
        tensors.insert(mean_name, Tensor::from_vec(new_mean, n, &Device::Cpu)?);
        tensors.insert(var_name, Tensor::from_vec(new_var, n, &Device::Cpu)?);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_data_set() {
        assert_eq!(sample_indices(3, 32), [0, 1, 2]);
        assert_eq!(sample_indices(8, 4), [0, 2, 4, 6]);
        assert_eq!(sample_indices(100, 32).len(), 32);
        assert_eq!(sample_indices(100, 32)[31], 96);
    }

    #[test]
    fn divergence_is_zero_at_the_running_statistics_and_grows_away_from_them() {
        let at = |m: f32, v: f32| {
            divergence(&BnStats { name: "bn1".into(), mean: vec![m; 5], var: vec![v; 5], samples: 256 })
        };
        assert!(at(0.0, 1.0).abs() < 1e-12);
        // Variance 4 or 1/4 (inputs twice as spread, or half): (4 + 1/4) / 2 - 1.
        assert!((at(0.0, 4.0) - 1.125).abs() < 1e-9);
        assert!((at(0.0, 0.25) - 1.125).abs() < 1e-9);
        assert!((at(1.0, 1.0) - 1.0).abs() < 1e-9);
        assert!(at(0.0, 0.0).is_finite() && at(0.0, 0.0) > 10.0);
        // The median: two wild channels of five do not move it.
        let mixed = BnStats { name: "x".into(), mean: vec![0.0, 0.0, 0.0, 9.0, 9.0], var: vec![1.0; 5], samples: 256 };
        assert!(divergence(&mixed).abs() < 1e-12);
    }
}
