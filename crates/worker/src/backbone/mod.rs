//! Frozen ResNet backbones (torchvision tensor names), with each eval-mode
//! batch norm folded into the convolution before it.
//!
//! The network is candle-transformers' ResNet (`models::resnet`), rebuilt here
//! so that batch norms can be folded and so that `resnet50-v1` (stride on the
//! first 1x1 convolution of a downsampling block, as in the original MSRA
//! weights) shares the code. A test checks that the result equals
//! candle-transformers' own network.
//!
//! - `model`: the ResNet itself (stem, blocks, forward pass);
//! - `ops`: a convolution with its batch norm folded in, and the CPU kernels
//!   it runs on (im2col, the bias/residual/ReLU epilogue);
//! - `cpu_conv`: the same convolutions on a CPU with AVX-512, patches
//!   gathered into the product: in f32, and in bf16 (`dtype = "bf16"`) on
//!   AMX tiles or AVX-512 BF16;
//! - `weights`: where the tensors come from (safetensors, `.pth`, `hub:`,
//!   seeded random) and the checks of their names and shapes;
//! - `declared`: what a weights file declares about itself (architecture,
//!   normalisation), used or checked against the sweep file.

mod cpu_conv;
mod declared;
mod model;
mod ops;
mod weights;

use candle_core::{DType as CDType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::PathBuf;

pub use cpu_conv::Kernel as Bf16Kernel;
pub use declared::{declared, model_in_force, parse_fraction, Declared, ModelGiven, ModelInForce};
pub use model::Probe;
pub use ops::BnStats;
pub use weights::{check_weights, param_shapes, random_weights};

use crate::preprocess::{ChannelOrder, Transform};
use crate::Error;

/// A backbone architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// ResNet-18 (basic blocks), 512 features.
    Resnet18,
    /// ResNet-34 (basic blocks), 512 features.
    Resnet34,
    /// ResNet-50 v1.5 (torchvision: stride on the 3x3 convolution), 2048 features.
    Resnet50,
    /// ResNet-50 v1 (stride on the first 1x1 convolution), 2048 features.
    Resnet50V1,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 4] = [Arch::Resnet18, Arch::Resnet34, Arch::Resnet50, Arch::Resnet50V1];

    /// The name in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::Resnet50V1 => "resnet50-v1",
        }
    }

    /// Parses a sweep file's name.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    fn blocks(self) -> [usize; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet34 | Arch::Resnet50 | Arch::Resnet50V1 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        matches!(self, Arch::Resnet50 | Arch::Resnet50V1)
    }

    /// Length of the feature vector.
    pub fn feature_dim(self) -> usize {
        if self.bottleneck() {
            2048
        } else {
            512
        }
    }
}

/// Where the backbone's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// A `.safetensors` file (memory-mapped).
    Safetensors(PathBuf),
    /// A torchvision `.pth` state dict.
    Pth(PathBuf),
    /// `model.safetensors` of a Hugging Face hub model repository, in
    /// torchvision's tensor names (timm's ResNet repositories use others).
    Hub {
        /// `owner/name`.
        repo: String,
    },
    /// Seeded random weights, for demos and tests.
    Random {
        /// Seed of the generator.
        seed: u64,
    },
}

/// How the feature cache stores features (`feature_dtype`): f32, or f16
/// (half the disk and memory; converted to f32 a batch at a time when
/// rows are gathered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureDType {
    /// 32-bit floats, the default.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
}

impl FeatureDType {
    /// The name in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            FeatureDType::F32 => "f32",
            FeatureDType::F16 => "f16",
        }
    }

    /// Bytes a feature takes in the cache.
    pub fn bytes(self) -> usize {
        match self {
            FeatureDType::F32 => 4,
            FeatureDType::F16 => 2,
        }
    }
}

/// Precision of the backbone pass (features are stored as `feature_dtype` either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// The name in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// What a backbone pass on `device` (`cpu`, `cuda`, `cuda:N`) computes
    /// in when `self` is asked for, and the line that says so when it is not
    /// `self`. On the CPU, bf16 runs on AMX tiles or AVX-512 BF16 (see
    /// [`bf16_on_cpu`]); a CPU without either computes a bf16 pass in f32 (Candle's CPU matrix
    /// product refuses bf16): the same features as `dtype = "f32"`, under
    /// f32's cache key, so a cache entry always holds what its key says.
    pub fn on_device(self, device: &str) -> (DType, Option<String>) {
        match self {
            DType::BF16 if device == "cpu" => match cpu_conv::unavailable() {
                Some(why) => (DType::F32, Some(format!("dtype bf16: {why}, so the backbone computes in f32"))),
                None => (DType::BF16, None),
            },
            dtype => (dtype, None),
        }
    }

    fn candle(self) -> CDType {
        match self {
            DType::F32 => CDType::F32,
            DType::F16 => CDType::F16,
            DType::BF16 => CDType::BF16,
        }
    }
}

/// Whether `dtype = "bf16"` computes in bf16 on this CPU: AVX-512 BF16
/// (AMD Zen 4 and later, Intel Cooper Lake and later), on AMX tiles where
/// the CPU and Linux allow them (Intel Sapphire Rapids and later).
/// Elsewhere a bf16 pass on the CPU computes in f32.
pub fn bf16_on_cpu() -> bool {
    cpu_conv::available()
}

/// What computes a bf16 pass's products on this CPU, or why nothing does
/// (see `SWEEP_CPU_BF16` in the README).
pub fn bf16_kernel() -> Result<Bf16Kernel, &'static str> {
    cpu_conv::kernel()
}

/// f32 GFLOP/s that one core's f32 convolution kernel sustains on a block
/// in L2, for about `seconds` (no gather, no epilogue: the products'
/// ceiling; see `sweep bench`); `None` without AVX-512.
pub fn f32_block_gflops(seconds: f64) -> Option<f64> {
    cpu_conv::f32_block_flops(seconds).map(|f| f / 1e9)
}

/// bf16 GFLOP/s that one core's [`bf16_kernel`] sustains, measured for
/// about `seconds` (see `sweep bench`); `None` where [`bf16_on_cpu`] is not.
pub fn bf16_peak_gflops(seconds: f64) -> Option<f64> {
    cpu_conv::peak_flops(seconds).map(|f| f / 1e9)
}

/// The `[model]` section of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// Its weights.
    pub weights: Weights,
    /// Resize and crop size.
    pub image_size: usize,
    /// Normalisation mean, in `channel_order`.
    pub mean: [f64; 3],
    /// Normalisation standard deviation, in `channel_order`.
    pub std: [f64; 3],
    /// The order of the colour channels the weights expect.
    pub channel_order: ChannelOrder,
    /// Precision of the backbone pass.
    pub dtype: DType,
    /// How the cache stores the features.
    pub feature_dtype: FeatureDType,
}

impl ModelConfig {
    /// The preprocessing of every image for this backbone.
    pub fn transform(&self) -> Transform {
        Transform { size: self.image_size, mean: self.mean, std: self.std, channel_order: self.channel_order }
    }
}

/// A loaded, frozen backbone.
pub struct Backbone {
    net: model::ResNet,
    untrained: bool,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone").field("arch", &self.net.arch).field("dtype", &self.net.dtype).finish()
    }
}

impl Backbone {
    /// Loads the weights the config names, checking every name and shape,
    /// and that every value is finite (a weights file full of NaN would
    /// otherwise give NaN features and a head at chance accuracy).
    pub fn load(cfg: &ModelConfig, device: &Device) -> Result<Backbone, Error> {
        let weights::Loaded { tensors, file } = weights::load(cfg)?;
        Backbone::build(cfg, tensors, file.as_deref(), device)
    }

    /// A backbone of tensors in hand (checked by the caller), for tests.
    pub(crate) fn from_tensors(
        cfg: &ModelConfig,
        tensors: std::collections::HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Backbone, Error> {
        Backbone::build(cfg, tensors, None, device)
    }

    fn build(
        cfg: &ModelConfig,
        tensors: std::collections::HashMap<String, Tensor>,
        file: Option<&std::path::Path>,
        device: &Device,
    ) -> Result<Backbone, Error> {
        let untrained = weights::at_initial_statistics(&tensors)?;
        // bf16 on the CPU: the network in f32 (stem, pooling, the residual
        // stream) with its convolutions' products in bf16; on a CPU that
        // cannot, f32 throughout (see `DType::on_device`).
        let wants_bf16 = cfg.dtype == DType::BF16 && device.is_cpu();
        let dtype = if wants_bf16 { CDType::F32 } else { cfg.dtype.candle() };
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        // On a CPU with AVX-512 the convolutions run on `cpu_conv`'s kernels
        // (f32 too), elsewhere on Candle's matrix product.
        let pack = match (device.is_cpu(), dtype) {
            (true, CDType::F32) if wants_bf16 && bf16_on_cpu() => ops::Pack::Bf16,
            (true, CDType::F32) if cpu_conv::f32_available() => ops::Pack::F32,
            _ => ops::Pack::No,
        };
        let net = model::ResNet::build(cfg.arch, vb, pack).map_err(|e| match file {
            Some(path) => weights::weights_err(path, e),
            None => Error::from(e),
        })?;
        Ok(Backbone { net, untrained })
    }

    /// Whether every batch norm's running statistics are at their initial
    /// values (mean 0, variance 1): random weights, or weights never trained.
    pub fn untrained(&self) -> bool {
        self.untrained
    }

    /// What each batch norm of the stem and `layer1` saw of a batch
    /// (`[B, 3, S, S]` normalised f32 images), in network order: the sanity
    /// check's measure (the rest of the network is not run).
    pub fn bn_stats(&self, xs: &Tensor) -> Result<Vec<BnStats>, Error> {
        Ok(self.net.bn_stats(xs, false)?)
    }

    /// What the sanity check measures of a batch (`[B, 3, S, S]` normalised
    /// f32 images): [`Backbone::bn_stats`] and, for a ResNet-50, `layer2`'s
    /// first block under both stride placements (v1 and v1.5).
    pub fn probe(&self, xs: &Tensor) -> Result<Probe, Error> {
        Ok(self.net.probe(xs)?)
    }

    /// What the stem's batch norm (`bn1`) saw of a batch: the first layer only.
    pub fn stem_stats(&self, xs: &Tensor) -> Result<BnStats, Error> {
        Ok(self.net.stem_stats(xs)?)
    }

    /// [`Backbone::bn_stats`] with each batch norm normalising by the batch's
    /// own statistics (training mode): what a network calibrated on the batch
    /// would see, every layer at once.
    pub(crate) fn calibration_stats(&self, xs: &Tensor) -> Result<Vec<BnStats>, Error> {
        Ok(self.net.bn_stats(xs, true)?)
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.net.arch
    }

    /// Features of a batch: `[B, 3, S, S]` normalised f32 images in, `[B, D]` f32 out.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, Error> {
        Ok(self.net.forward(xs)?)
    }
}
