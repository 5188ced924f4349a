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
///
/// Past the stem the network runs channels-last (`[B, H, W, C]`), so that
/// every convolution is one matrix product: a 1x1 stride-1 convolution
/// multiplies the activations themselves (`[B·H·W, C]`), any other gathers
/// its patches first (im2col, rows in `(ky, kx, c)` order). The bias, the
/// residual and the ReLU are then applied in one pass over the product.
struct ConvBn {
    /// `[k·k·c_in, c_out]`: the folded weight, rows in `(ky, kx, c_in)` order.
    weight: Tensor,
    /// `[c_out]`: the folded bias.
    bias: Tensor,
    /// The folded bias on the host, for the fused CPU epilogue.
    bias_host: Vec<f32>,
    k: usize,
    stride: usize,
    c_out: usize,
}

/// Folds an eval-mode batch norm into the convolution before it: the weight
/// `[c_out, c_in, k, k]` and bias `[c_out]`, in f32.
fn fold_bn(
    vb: &VarBuilder,
    conv: &str,
    bn: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let w = vb.get((c_out, c_in, k, k), &format!("{conv}.weight"))?.to_dtype(CDType::F32)?;
    let get = |part: &str| vb.get(c_out, &format!("{bn}.{part}")).and_then(|t| t.to_dtype(CDType::F32));
    let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
    // torch.nn.BatchNorm2d in eval mode: (x - mean) / sqrt(var + eps) * gamma + beta.
    let scale = (gamma / (var + 1e-5)?.sqrt()?)?;
    let bias = (beta - (mean * &scale)?)?;
    let w = w.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
    Ok((w, bias))
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
    ) -> candle_core::Result<ConvBn> {
        let (w, bias) = fold_bn(vb, conv, bn, c_in, c_out, k)?;
        let weight = w.permute((2, 3, 1, 0))?.reshape((k * k * c_in, c_out))?.contiguous()?;
        let bias_host = bias.to_vec1::<f32>()?;
        let dtype = vb.dtype();
        Ok(ConvBn { weight: weight.to_dtype(dtype)?, bias: bias.to_dtype(dtype)?, bias_host, k, stride, c_out })
    }

    /// `relu(conv(xs) + bias [+ residual])` on channels-last `[B, H, W, C]`
    /// activations; `residual` has the output's shape.
    fn forward(&self, xs: &Tensor, residual: Option<&Tensor>, relu: bool) -> candle_core::Result<Tensor> {
        let (b, h, w, c) = xs.dims4()?;
        let pad = self.k / 2;
        let (ho, wo) = ((h + 2 * pad - self.k) / self.stride + 1, (w + 2 * pad - self.k) / self.stride + 1);
        let cols = if self.k == 1 && self.stride == 1 {
            xs.reshape((b * h * w, c))?
        } else {
            im2col(xs, self.k, self.stride, pad)?
        };
        let ys = cols.matmul(&self.weight)?;
        let fused = ys.device().is_cpu() && ys.dtype() == CDType::F32 && ys.is_contiguous();
        let ys = if fused {
            let op = Epilogue { bias: &self.bias_host, relu };
            match residual {
                Some(r) => ys.inplace_op2(&r.reshape((b * ho * wo, self.c_out))?.contiguous()?, &op)?,
                None => ys.inplace_op1(&op)?,
            }
            ys
        } else {
            let mut ys = ys.broadcast_add(&self.bias)?;
            if let Some(r) = residual {
                ys = (ys + r.reshape((b * ho * wo, self.c_out))?)?;
            }
            if relu {
                ys = ys.relu()?;
            }
            ys
        };
        ys.reshape((b, ho, wo, self.c_out))
    }
}

/// The patches of a `k`x`k` convolution (zero padding `pad`) of channels-last
/// `[B, H, W, C]` activations: `[B·Ho·Wo, k·k·C]`, each row in `(ky, kx, c)` order.
fn im2col(xs: &Tensor, k: usize, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == CDType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&Im2Col { k, stride, pad })
    } else {
        im2col_ops(xs, k, stride, pad)
    }
}

/// [`im2col`] in plain tensor operations, for every device and dtype.
fn im2col_ops(xs: &Tensor, k: usize, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = xs.dims4()?;
    let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    // Pad to a multiple of the stride, so that a reshape can pick every stride-th row.
    let (hp, wp) = ((h + 2 * pad).next_multiple_of(stride), (w + 2 * pad).next_multiple_of(stride));
    let xs = xs.pad_with_zeros(1, pad, hp - h - pad)?.pad_with_zeros(2, pad, wp - w - pad)?;
    let xs = xs.reshape((b, hp / stride, stride, wp / stride, stride, c))?;
    let mut patches = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let p = xs
                .narrow(2, ky % stride, 1)?
                .narrow(1, ky / stride, ho)?
                .narrow(4, kx % stride, 1)?
                .narrow(3, kx / stride, wo)?
                .reshape((b * ho * wo, c))?;
            patches.push(p);
        }
    }
    Tensor::cat(&patches, 1)
}

/// [`im2col`] on the CPU in f32: one pass that copies each pixel's channels
/// as a block.
struct Im2Col {
    k: usize,
    stride: usize,
    pad: usize,
}

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let (Some((start, end)), candle_core::CpuStorage::F32(src)) = (layout.contiguous_offsets(), storage) else {
            candle_core::bail!("im2col-nhwc: needs contiguous f32 input");
        };
        let src = &src[start..end];
        let Im2Col { k, stride, pad } = *self;
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        let row = k * k * c;
        let mut dst = vec![0f32; b * ho * wo * row];
        // One output image row (Wo pixels) per task, spread over candle's threads.
        let rows_per_task = wo * row;
        let fill = |task: usize, out: &mut [f32]| {
            let (bi, oy) = (task / ho, task % ho);
            for ox in 0..wo {
                let patch = &mut out[ox * row..(ox + 1) * row];
                for ky in 0..k {
                    let iy = (oy * stride + ky).wrapping_sub(pad);
                    if iy >= h {
                        continue; // zero padding: dst starts zeroed
                    }
                    for kx in 0..k {
                        let ix = (ox * stride + kx).wrapping_sub(pad);
                        if ix >= w {
                            continue;
                        }
                        let s = ((bi * h + iy) * w + ix) * c;
                        let d = (ky * k + kx) * c;
                        patch[d..d + c].copy_from_slice(&src[s..s + c]);
                    }
                }
            }
        };
        let tasks = b * ho;
        let threads = candle_core::utils::get_num_threads().clamp(1, tasks.max(1));
        let per_thread = tasks.div_ceil(threads);
        std::thread::scope(|scope| {
            for (t, chunk) in dst.chunks_mut(per_thread * rows_per_task).enumerate() {
                let fill = &fill;
                scope.spawn(move || {
                    for (i, out) in chunk.chunks_mut(rows_per_task).enumerate() {
                        fill(t * per_thread + i, out);
                    }
                });
            }
        });
        Ok((candle_core::CpuStorage::F32(dst), (b * ho * wo, row).into()))
    }
}

/// `y = relu(y + bias [+ residual])` in place, on a contiguous f32 `[M, C]`
/// matrix on the CPU.
struct Epilogue<'a> {
    bias: &'a [f32],
    relu: bool,
}

impl Epilogue<'_> {
    fn apply(&self, ys: &mut [f32], residual: Option<&[f32]>) {
        let c = self.bias.len();
        let relu = |v: f32| if self.relu { v.max(0.0) } else { v };
        match residual {
            Some(r) => {
                for (y_row, r_row) in ys.chunks_exact_mut(c).zip(r.chunks_exact(c)) {
                    for ((y, b), r) in y_row.iter_mut().zip(self.bias).zip(r_row) {
                        *y = relu(*y + b + r);
                    }
                }
            }
            None => {
                for y_row in ys.chunks_exact_mut(c) {
                    for (y, b) in y_row.iter_mut().zip(self.bias) {
                        *y = relu(*y + b);
                    }
                }
            }
        }
    }
}

fn f32_slice_mut<'s>(
    storage: &'s mut candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'s mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("epilogue: needs contiguous f32 storage"),
    }
}

impl candle_core::InplaceOp1 for Epilogue<'_> {
    fn name(&self) -> &'static str {
        "bias-relu"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<()> {
        self.apply(f32_slice_mut(storage, layout)?, None);
        Ok(())
    }
}

impl candle_core::InplaceOp2 for Epilogue<'_> {
    fn name(&self) -> &'static str {
        "bias-residual-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let residual = match (s2, l2.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((start, end))) => &v[start..end],
            _ => candle_core::bail!("epilogue: needs a contiguous f32 residual"),
        };
        self.apply(f32_slice_mut(s1, l1)?, Some(residual));
        Ok(())
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    /// Channels-last in and out.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(xs, None, false)?,
            None => xs.clone(),
        };
        let (last, first) = self.convs.split_last().expect("a block has convolutions");
        let mut ys = xs.clone();
        for conv in first {
            ys = conv.forward(&ys, None, true)?;
        }
        last.forward(&ys, Some(&shortcut), true)
    }
}

/// A loaded, frozen backbone.
pub struct Backbone {
    stem: Conv2d,
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
            Weights::Safetensors(path) => Backbone::load_safetensors(cfg.arch, path, dtype, device),
            Weights::Pth(path) => {
                let infos =
                    candle_core::pickle::read_pth_tensor_info(path, false, None).map_err(|e| weights_err(path, e))?;
                let shapes: HashMap<String, Vec<usize>> =
                    infos.into_iter().map(|i| (i.name.clone(), i.layout.shape().dims().to_vec())).collect();
                check_shapes(cfg.arch, &shapes, &path.display().to_string())?;
                let vb = VarBuilder::from_pth(path, dtype, device).map_err(|e| weights_err(path, e))?;
                Backbone::build(cfg.arch, vb).map_err(|e| weights_err(path, e))
            }
            Weights::Hub { repo } => Backbone::load_safetensors(cfg.arch, &hub_file(repo)?, dtype, device),
        }
    }

    fn load_safetensors(arch: Arch, path: &Path, dtype: CDType, device: &Device) -> Result<Backbone, Error> {
        let shapes = safetensors_shapes(path)?;
        check_shapes(arch, &shapes, &path.display().to_string())?;
        // SAFETY: the file is mapped read-only and sweep never writes weight
        // files; as with every mmap, another process truncating it underneath
        // would be undefined behaviour, which candle's own loaders accept too.
        #[allow(unsafe_code)]
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }.map_err(|e| weights_err(path, e))?;
        Backbone::build(arch, vb).map_err(|e| weights_err(path, e))
    }

    fn build(arch: Arch, vb: VarBuilder) -> candle_core::Result<Backbone> {
        let (w, bias) = fold_bn(&vb, "conv1", "bn1", 3, 64, 7)?;
        let cfg = Conv2dConfig { padding: 3, stride: 2, ..Default::default() };
        let stem = Conv2d::new(w.to_dtype(vb.dtype())?, Some(bias.to_dtype(vb.dtype())?), cfg);
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
            .max_pool2d_with_stride(3, 2)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        // Global average pool over the channels-last [B, H, W, C].
        let (b, h, w, c) = xs.dims4()?;
        Ok(xs.reshape((b, h * w, c))?.mean(1)?.to_dtype(CDType::F32)?)
    }
}

/// The file a hub repository must hold. Its tensors need torchvision's names
/// (`conv1.weight`, `layer1.0.bn1.running_mean`, ...): timm's and
/// transformers' ResNet repositories name them otherwise and are refused with
/// the list of mismatches.
const HUB_FILE: &str = "model.safetensors";

/// Finds `HUB_FILE` of a hub model repository: in the Hugging Face cache
/// (`HF_HOME`, default `~/.cache/huggingface`) if it is there, else downloaded
/// from `HF_ENDPOINT` (default huggingface.co) into that cache, with the token
/// of `HF_TOKEN` or the cache. `HF_HUB_OFFLINE=1` looks in the cache only.
/// Offline, a download fails at once (connection refused, unknown host)
/// or after ureq's 30 s connect timeout (a network that drops packets).
fn hub_file(repo: &str) -> Result<PathBuf, Error> {
    let err = |message: String| Error::Weights { path: format!("hub:{repo}"), message };
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) || repo.contains(char::is_whitespace) {
        return Err(err("expected a hub repository as `owner/name`".to_owned()));
    }
    let cache = hf_hub::Cache::from_env();
    let hub_repo = hf_hub::Repo::model(repo.to_owned());
    if let Some(path) = cache.repo(hub_repo.clone()).get(HUB_FILE) {
        return Ok(path);
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "true", "yes", "on"].contains(&v.trim().to_ascii_lowercase().as_str()));
    if offline {
        return Err(err(format!(
            "{HUB_FILE} is not in the hub cache {} and HF_HUB_OFFLINE is set",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| err(format!("cannot reach the hub: {e}")))?;
    tracing::info!(repo, file = HUB_FILE, cache = %cache.path().display(), "downloading backbone weights");
    let url = api.model(repo.to_owned()).url(HUB_FILE);
    api.model(repo.to_owned()).download(HUB_FILE).map_err(|e| {
        err(format!("cannot download {url}: {e} (offline? put the file in the hub cache and set HF_HUB_OFFLINE=1, or name a local file)"))
    })
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
            // 67: odd sizes after the stem (34, 17, 9, 5, 3) test the padding of strided convolutions.
            let x = Tensor::randn(0f32, 1f32, (2, 3, 67, 67), &Device::Cpu)?;
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
    fn cpu_kernels_equal_the_generic_tensor_ops() -> Result<(), Error> {
        // Other devices and dtypes take the plain tensor-op paths: check that
        // they compute what the CPU kernels compute, odd sizes included.
        for (h, w, c, k, stride) in [(7, 5, 3, 3, 2), (8, 8, 4, 3, 1), (9, 6, 2, 1, 2), (5, 5, 3, 7, 2)] {
            let x = Tensor::randn(0f32, 1f32, (2, h, w, c), &Device::Cpu)?;
            let fast = im2col(&x, k, stride, k / 2)?;
            let ops = im2col_ops(&x, k, stride, k / 2)?;
            assert_eq!(fast.dims(), ops.dims());
            assert_eq!(fast.flatten_all()?.to_vec1::<f32>()?, ops.flatten_all()?.to_vec1::<f32>()?);
        }
        let ys = Tensor::randn(0f32, 1f32, (6, 4), &Device::Cpu)?;
        let residual = Tensor::randn(0f32, 1f32, (6, 4), &Device::Cpu)?;
        let bias = vec![0.5f32, -0.5, 1.0, -1.0];
        let bias_t = Tensor::new(bias.as_slice(), &Device::Cpu)?;
        for (res, relu) in [(None, true), (Some(&residual), true), (Some(&residual), false)] {
            let fused = ys.copy()?;
            let op = Epilogue { bias: &bias, relu };
            match res {
                Some(r) => fused.inplace_op2(r, &op)?,
                None => fused.inplace_op1(&op)?,
            }
            let mut plain = ys.broadcast_add(&bias_t)?;
            if let Some(r) = res {
                plain = (plain + r)?;
            }
            if relu {
                plain = plain.relu()?;
            }
            assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, plain.flatten_all()?.to_vec1::<f32>()?);
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
