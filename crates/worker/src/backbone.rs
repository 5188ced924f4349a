//! Frozen ResNet backbones (torchvision tensor names), with each eval-mode
//! batch norm folded into the convolution before it.
//!
//! The network is candle-transformers' ResNet (`models::resnet`), rebuilt here
//! so that batch norms can be folded and so that `resnet50-v1` (stride on the
//! first 1x1 convolution of a downsampling block, as in the original MSRA
//! weights) shares the code. A test checks that the result equals
//! candle-transformers' own network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType as CDType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    /// `model.safetensors` of a Hugging Face hub repository.
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

/// Precision of the backbone pass (features are stored as f32 either way).
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

    fn candle(self) -> CDType {
        match self {
            DType::F32 => CDType::F32,
            DType::F16 => CDType::F16,
            DType::BF16 => CDType::BF16,
        }
    }
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
    /// Normalisation mean (RGB).
    pub mean: [f64; 3],
    /// Normalisation standard deviation (RGB).
    pub std: [f64; 3],
    /// Precision of the backbone pass.
    pub dtype: DType,
}

/// The torchvision names and shapes of every tensor the backbone needs
/// (batch-norm buffers included, the final `fc` excluded).
pub fn param_shapes(arch: Arch) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv = |name: String, c_out: usize, c_in: usize, k: usize| {
        out.push((format!("{name}.weight"), vec![c_out, c_in, k, k]));
    };
    let mut bns = Vec::new();
    conv("conv1".into(), 64, 3, 7);
    bns.push(("bn1".to_owned(), 64));
    let mut c_in = 64;
    for (layer, (&count, width)) in arch.blocks().iter().zip([64, 128, 256, 512]).enumerate() {
        for block in 0..count {
            let p = format!("layer{}.{block}", layer + 1);
            let stride = if block == 0 && layer > 0 { 2 } else { 1 };
            if arch.bottleneck() {
                let c_out = width * 4;
                conv(format!("{p}.conv1"), width, c_in, 1);
                conv(format!("{p}.conv2"), width, width, 3);
                conv(format!("{p}.conv3"), c_out, width, 1);
                bns.extend([(format!("{p}.bn1"), width), (format!("{p}.bn2"), width), (format!("{p}.bn3"), c_out)]);
                if stride != 1 || c_in != c_out {
                    conv(format!("{p}.downsample.0"), c_out, c_in, 1);
                    bns.push((format!("{p}.downsample.1"), c_out));
                }
                c_in = c_out;
            } else {
                conv(format!("{p}.conv1"), width, c_in, 3);
                conv(format!("{p}.conv2"), width, width, 3);
                bns.extend([(format!("{p}.bn1"), width), (format!("{p}.bn2"), width)]);
                if stride != 1 || c_in != width {
                    conv(format!("{p}.downsample.0"), width, c_in, 1);
                    bns.push((format!("{p}.downsample.1"), width));
                }
                c_in = width;
            }
        }
    }
    for (name, c) in bns {
        for part in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.{part}"), vec![c]));
        }
    }
    out
}

/// Seeded random weights in torchvision's own initialisation: Kaiming-normal
/// convolutions (fan-out, ReLU gain), batch norms at weight 1, bias 0, and
/// running statistics 0 and 1. Their features have the scale of a trained
/// network's (mean about 0.7 on the demo's images).
pub fn random_weights(arch: Arch, seed: u64) -> Result<HashMap<String, Tensor>, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in param_shapes(arch) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 4 {
            let fan_out = shape[0] * shape[2] * shape[3];
            let std = (2.0 / fan_out as f64).sqrt() as f32;
            (0..n).map(|_| normal(&mut rng) * std).collect()
        } else if name.ends_with(".running_var") || name.ends_with(".weight") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A convolution with its batch norm folded in.
struct ConvBn {
    conv: Conv2d,
}

impl ConvBn {
    fn new(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<ConvBn, candle_core::Error> {
        let w = vb.get((c_out, c_in, k, k), &format!("{conv}.weight"))?.to_dtype(CDType::F32)?;
        let get = |part: &str| vb.get(c_out, &format!("{bn}.{part}")).and_then(|t| t.to_dtype(CDType::F32));
        let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
        // torch.nn.BatchNorm2d in eval mode: (x - mean) / sqrt(var + eps) * gamma + beta.
        let scale = (gamma / (var + 1e-5)?.sqrt()?)?;
        let bias = (beta - (mean * &scale)?)?;
        let w = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let dtype = vb.dtype();
        let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        Ok(ConvBn { conv: Conv2d::new(w.to_dtype(dtype)?, Some(bias.to_dtype(dtype)?), cfg) })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.conv.forward(xs)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut ys = xs.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            ys = conv.forward(&ys)?;
            if i + 1 < self.convs.len() {
                ys = ys.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(xs)?,
            None => xs.clone(),
        };
        (shortcut + ys)?.relu()
    }
}

/// A loaded, frozen backbone.
pub struct Backbone {
    stem: ConvBn,
    blocks: Vec<Block>,
    arch: Arch,
    dtype: CDType,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone").field("arch", &self.arch).field("dtype", &self.dtype).finish()
    }
}

impl Backbone {
    /// Loads the weights the config names, checking every name and shape.
    pub fn load(cfg: &ModelConfig, device: &Device) -> Result<Backbone, Error> {
        let dtype = cfg.dtype.candle();
        match &cfg.weights {
            Weights::Random { seed } => {
                let tensors = random_weights(cfg.arch, *seed)?;
                let vb = VarBuilder::from_tensors(tensors, dtype, device);
                Ok(Backbone::build(cfg.arch, vb)?)
            }
            Weights::Safetensors(path) => {
                let shapes = safetensors_shapes(path)?;
                check_shapes(cfg.arch, &shapes, &path.display().to_string())?;
                // SAFETY: the file is mapped read-only and sweep never writes weight
                // files; as with every mmap, another process truncating it underneath
                // would be undefined behaviour, which candle's own loaders accept too.
                #[allow(unsafe_code)]
                let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
                    .map_err(|e| weights_err(path, e))?;
                Backbone::build(cfg.arch, vb).map_err(|e| weights_err(path, e))
            }
            Weights::Pth(path) => {
                let infos =
                    candle_core::pickle::read_pth_tensor_info(path, false, None).map_err(|e| weights_err(path, e))?;
                let shapes: HashMap<String, Vec<usize>> =
                    infos.into_iter().map(|i| (i.name.clone(), i.layout.shape().dims().to_vec())).collect();
                check_shapes(cfg.arch, &shapes, &path.display().to_string())?;
                let vb = VarBuilder::from_pth(path, dtype, device).map_err(|e| weights_err(path, e))?;
                Backbone::build(cfg.arch, vb).map_err(|e| weights_err(path, e))
            }
            Weights::Hub { repo } => Err(Error::Weights {
                path: format!("hub:{repo}"),
                message: "hub downloads are not built in yet: download model.safetensors and name the file".to_owned(),
            }),
        }
    }

    fn build(arch: Arch, vb: VarBuilder) -> candle_core::Result<Backbone> {
        let stem = ConvBn::new(&vb, "conv1", "bn1", 3, 64, 7, 2)?;
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (layer, (&count, width)) in arch.blocks().iter().zip([64, 128, 256, 512]).enumerate() {
            for block in 0..count {
                let p = format!("layer{}.{block}", layer + 1);
                let stride = if block == 0 && layer > 0 { 2 } else { 1 };
                let (convs, c_out) = if arch.bottleneck() {
                    let (s1, s2) = if arch == Arch::Resnet50V1 { (stride, 1) } else { (1, stride) };
                    let c_out = width * 4;
                    let convs = vec![
                        ConvBn::new(&vb, &format!("{p}.conv1"), &format!("{p}.bn1"), c_in, width, 1, s1)?,
                        ConvBn::new(&vb, &format!("{p}.conv2"), &format!("{p}.bn2"), width, width, 3, s2)?,
                        ConvBn::new(&vb, &format!("{p}.conv3"), &format!("{p}.bn3"), width, c_out, 1, 1)?,
                    ];
                    (convs, c_out)
                } else {
                    let convs = vec![
                        ConvBn::new(&vb, &format!("{p}.conv1"), &format!("{p}.bn1"), c_in, width, 3, stride)?,
                        ConvBn::new(&vb, &format!("{p}.conv2"), &format!("{p}.bn2"), width, width, 3, 1)?,
                    ];
                    (convs, width)
                };
                let downsample = if stride != 1 || c_in != c_out {
                    let (conv, bn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    Some(ConvBn::new(&vb, &conv, &bn, c_in, c_out, 1, stride)?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                c_in = c_out;
            }
        }
        Ok(Backbone { stem, blocks, arch, dtype: vb.dtype() })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Features of a batch: `[B, 3, S, S]` normalised f32 images in, `[B, D]` f32 out.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, Error> {
        let xs = xs.to_dtype(self.dtype)?;
        let mut xs = self
            .stem
            .forward(&xs)?
            .relu()?
            // After a ReLU every value is >= 0, so edge padding equals torch's -inf padding.
            .pad_with_same(D::Minus1, 1, 1)?
            .pad_with_same(D::Minus2, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        Ok(xs.mean(D::Minus1)?.mean(D::Minus1)?.to_dtype(CDType::F32)?)
    }
}

fn weights_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Weights { path: path.display().to_string(), message: e.to_string() }
}

fn safetensors_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>, Error> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| weights_err(path, format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| weights_err(path, "not a safetensors file (too short)"))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(weights_err(path, "not a safetensors file (header length out of range)"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| weights_err(path, "not a safetensors file (header cut short)"))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| weights_err(path, format!("not a safetensors file: {e}")))?;
    Ok(meta.tensors().into_iter().map(|(name, info)| (name, info.shape.clone())).collect())
}

/// Checks a weights file's tensor names and shapes against the architecture,
/// listing the first mismatches.
fn check_shapes(arch: Arch, found: &HashMap<String, Vec<usize>>, path: &str) -> Result<(), Error> {
    let mut problems = Vec::new();
    let expected = param_shapes(arch);
    for (name, shape) in &expected {
        match found.get(name) {
            None => problems.push(format!("missing `{name}`")),
            Some(s) if s != shape => problems.push(format!("`{name}` has shape {s:?}, expected {shape:?}")),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let total = problems.len();
    let mut message = format!("does not fit {} ({total} of {} tensors wrong): ", arch.name(), expected.len());
    message.push_str(&problems.iter().take(4).cloned().collect::<Vec<_>>().join(", "));
    if total > 4 {
        message.push_str(&format!(", and {} more", total - 4));
    }
    if found.keys().any(|k| k.starts_with("model.") || k.starts_with("module.")) {
        message.push_str(" (its names carry a `model.`/`module.` prefix: save the bare state_dict)");
    }
    Err(Error::Weights { path: path.to_owned(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_counts_match_torchvision() {
        // torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in fc;
        // resnet18 11,689,512 with 513,000 in fc. Buffers (running stats) are not parameters.
        let count = |arch| -> usize {
            param_shapes(arch)
                .iter()
                .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        assert_eq!(count(Arch::Resnet50), 25_557_032 - 2_049_000);
        assert_eq!(count(Arch::Resnet18), 11_689_512 - 513_000);
    }

    #[test]
    fn folded_network_equals_candle_transformers() -> Result<(), Error> {
        type Reference = fn(VarBuilder<'static>) -> candle_core::Result<candle_nn::Func<'static>>;
        let cases: [(Arch, Reference); 2] = [
            (Arch::Resnet18, candle_transformers::models::resnet::resnet18_no_final_layer),
            (Arch::Resnet50, candle_transformers::models::resnet::resnet50_no_final_layer),
        ];
        for (arch, reference) in cases {
            let mut tensors = random_weights(arch, 3)?;
            // Make every batch norm non-trivial so that folding is really tested.
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            for (name, t) in tensors.iter_mut() {
                if t.rank() == 1 {
                    let n = t.elem_count();
                    let data: Vec<f32> = (0..n)
                        .map(|_| {
                            if name.ends_with("running_var") {
                                rng.random_range(0.5..1.5)
                            } else {
                                rng.random_range(-0.3..0.3) + if name.ends_with(".weight") { 0.5 } else { 0.0 }
                            }
                        })
                        .collect();
                    *t = Tensor::from_vec(data, n, &Device::Cpu)?;
                }
            }
            let vb = VarBuilder::from_tensors(tensors, CDType::F32, &Device::Cpu);
            let ours = Backbone::build(arch, vb.clone())?;
            let theirs = reference(vb)?;
            let x = Tensor::randn(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu)?;
            let a = ours.forward(&x)?;
            let b = theirs.forward(&x)?;
            assert_eq!(a.dims(), &[2, arch.feature_dim()]);
            let diff = a.sub(&b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff <= 1e-4 * scale.max(1e-6), "{}: max diff {diff} at scale {scale}", arch.name());
        }
        Ok(())
    }

    #[test]
    fn mismatched_weights_are_listed() {
        let mut found: HashMap<String, Vec<usize>> = param_shapes(Arch::Resnet18).into_iter().collect();
        found.remove("layer1.0.conv1.weight");
        found.insert("conv1.weight".into(), vec![64, 3, 3, 3]);
        let err = check_shapes(Arch::Resnet18, &found, "w.safetensors").unwrap_err().to_string();
        assert!(err.starts_with("w.safetensors: does not fit resnet18 (2 of"), "{err}");
        assert!(err.contains("`conv1.weight` has shape [64, 3, 3, 3], expected [64, 3, 7, 7]"), "{err}");
        assert!(err.contains("missing `layer1.0.conv1.weight`"), "{err}");
    }
}
