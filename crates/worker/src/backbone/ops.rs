//! Where a convolution is folded: each eval-mode batch norm becomes the
//! weight and bias of the convolution before it (`fold_bn`, `ConvBn`),
//! and every convolution past the stem is one matrix product on channels-last
//! activations, with the CPU kernels that feed and finish it: the patch
//! gather (`im2col`) and the bias + residual + ReLU epilogue.

use candle_core::{DType as CDType, Tensor};
use candle_nn::VarBuilder;

use super::cpu_conv;

/// Which CPU kernels a network's convolutions run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pack {
    /// Candle's matrix product (f32 on any device, f16 and bf16 on CUDA).
    No,
    /// [`cpu_conv`]'s f32 kernel (a CPU with AVX-512).
    F32,
    /// [`cpu_conv`]'s bf16 kernels (a CPU with AVX-512 BF16).
    Bf16,
}

/// A convolution with its batch norm folded in.
///
/// Past the stem the network runs channels-last (`[B, H, W, C]`), so that
/// every convolution is one matrix product: a 1x1 stride-1 convolution
/// multiplies the activations themselves (`[B·H·W, C]`), any other gathers
/// its patches first (im2col, rows in `(ky, kx, c)` order). The bias, the
/// residual and the ReLU are then applied in one pass over the product.
#[derive(Clone)]
pub(super) struct ConvBn {
    /// `[k·k·c_in, c_out]`: the folded weight, rows in `(ky, kx, c_in)` order.
    weight: Tensor,
    /// `[c_out]`: the folded bias.
    bias: Tensor,
    /// The folded bias on the host, for the fused CPU epilogue.
    bias_host: Vec<f32>,
    /// The folded weight packed for the CPU kernels of [`cpu_conv`] (in
    /// bf16 or f32), when the backbone runs on them.
    packed: Option<std::sync::Arc<cpu_conv::PackedWeights>>,
    k: usize,
    stride: usize,
    c_out: usize,
    /// The batch norm's name and its own weight and bias (`gamma`, `beta`),
    /// on the host: what [`BnStats`] needs to undo the fold.
    bn: String,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// What a batch norm saw of a batch: for each channel, the mean and the
/// variance of its input standardised by its running statistics,
/// `(x - running_mean) / sqrt(running_var + eps)`. On the data the weights
/// were trained on (or any data like it, preprocessed as they expect), both
/// are near 0 and 1.
#[derive(Debug, Clone, PartialEq)]
pub struct BnStats {
    /// The batch norm (`bn1`, `layer1.0.bn2`, `layer2.0.downsample.1`, ...).
    pub name: String,
    /// Per channel: the standardised input's mean.
    pub mean: Vec<f32>,
    /// Per channel: the standardised input's variance.
    pub var: Vec<f32>,
    /// Values per channel the statistics come from (images × positions).
    pub samples: usize,
}

/// The smallest variance a calibration divides by (a channel that never fires).
const VAR_FLOOR: f32 = 1e-4;

/// What a recording forward pass collects, and whether it calibrates.
pub(super) struct Recorder {
    /// What each batch norm saw, in network order.
    pub(super) stats: Vec<BnStats>,
    /// Each batch norm normalises with the batch's own statistics (as in
    /// training mode), so that every layer sees what it would see in a
    /// network whose running statistics were set from `stats`: one pass
    /// calibrates them all.
    pub(super) calibrate: bool,
}

impl Recorder {
    /// Records what batch norm `name` saw in `ys` (`[M, C]`, the output less
    /// `offset`). When calibrating, returns the per-channel `(a, b)` that
    /// make `a * ys + b` what the calibrated batch norm outputs (less `offset`).
    pub(super) fn see(
        &mut self,
        name: &str,
        ys: &Tensor,
        offset: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
    ) -> candle_core::Result<Option<(Vec<f32>, Vec<f32>)>> {
        let stats = bn_stats(name, ys, offset, gamma, beta)?;
        let affine = self.calibrate.then(|| {
            (0..gamma.len())
                .map(|c| {
                    let off = offset.map_or(0.0, |o| o[c]);
                    let a = 1.0 / stats.var[c].max(VAR_FLOOR).sqrt();
                    (a, a * (off - beta[c] - gamma[c] * stats.mean[c]) + beta[c] - off)
                })
                .unzip()
        });
        self.stats.push(stats);
        Ok(affine)
    }
}

/// `a * ys + b`, per channel, for `ys` whose channels are dimension `dim`.
pub(super) fn affine(ys: &Tensor, (a, b): &(Vec<f32>, Vec<f32>), shape: &[usize]) -> candle_core::Result<Tensor> {
    let a = Tensor::from_slice(a, shape, ys.device())?.to_dtype(ys.dtype())?;
    let b = Tensor::from_slice(b, shape, ys.device())?.to_dtype(ys.dtype())?;
    ys.broadcast_mul(&a)?.broadcast_add(&b)
}

/// Reads the folded `[M, C]` pre-activation output `ys` (without `bias`,
/// the folded bias, when `bias` is given) of a batch norm back into
/// [`BnStats`]: with `y = gamma * s + beta`, `s = (y - beta) / gamma`.
/// A channel whose `gamma` is 0 tells nothing and reads as mean 0, var 1.
pub(super) fn bn_stats(
    name: &str,
    ys: &Tensor,
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
) -> candle_core::Result<BnStats> {
    let ys = ys.to_dtype(CDType::F32)?;
    let mean_t = ys.mean(0)?;
    let var: Vec<f32> = ys.broadcast_sub(&mean_t)?.sqr()?.mean(0)?.to_vec1()?;
    let mean: Vec<f32> = mean_t.to_vec1()?;
    let mut out =
        BnStats { name: name.to_owned(), mean: Vec::with_capacity(gamma.len()), var: Vec::new(), samples: ys.dim(0)? };
    for c in 0..gamma.len() {
        let y_mean = mean[c] + bias.map_or(0.0, |b| b[c]);
        if gamma[c].abs() < 1e-12 {
            out.mean.push(0.0);
            out.var.push(1.0);
        } else {
            out.mean.push((y_mean - beta[c]) / gamma[c]);
            out.var.push(var[c] / (gamma[c] * gamma[c]));
        }
    }
    Ok(out)
}

/// Folds an eval-mode batch norm into the convolution before it: the weight
/// `[c_out, c_in, k, k]` and bias `[c_out]`, in f32.
pub(super) fn fold_bn(
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
    pub(super) fn new(
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
        let host = |part: &str| vb.get(c_out, &format!("{bn}.{part}"))?.to_dtype(CDType::F32)?.to_vec1::<f32>();
        let (gamma, beta) = (host("weight")?, host("bias")?);
        Ok(ConvBn {
            weight: weight.to_dtype(dtype)?,
            bias: bias.to_dtype(dtype)?,
            bias_host,
            packed: None,
            k,
            stride,
            c_out,
            bn: bn.to_owned(),
            gamma,
            beta,
        })
    }

    /// The same convolution with another stride (its tensors shared).
    pub(super) fn with_stride(&self, stride: usize) -> ConvBn {
        ConvBn { stride, ..self.clone() }
    }

    /// The same convolution on the CPU kernels of [`cpu_conv`] (its weight
    /// also kept packed for them, in bf16 or f32), where its shape allows
    /// (see [`cpu_conv::PackedWeights::new`]).
    pub(super) fn packed(self, pack: Pack) -> candle_core::Result<ConvBn> {
        if pack == Pack::No {
            return Ok(self);
        }
        let (k, n) = self.weight.dims2()?;
        let host = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let packed = match pack {
            Pack::Bf16 => cpu_conv::PackedWeights::new(&host, k, n),
            _ => cpu_conv::PackedWeights::f32(&host, k, n),
        };
        Ok(ConvBn { packed: packed.map(std::sync::Arc::new), ..self })
    }

    /// Whether it runs on the CPU kernels of [`cpu_conv`].
    pub(super) fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Its stride.
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// `relu(conv(xs) + bias [+ residual])` on channels-last `[B, H, W, C]`
    /// activations; `residual` has the output's shape. With `record`, what
    /// the batch norm saw is pushed to it (in f32). On the AMX tiles (a bf16
    /// backbone on a CPU that has them, not recording) the output is bf16
    /// when `bf16_out`; it is f32 otherwise.
    pub(super) fn forward(
        &self,
        xs: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
        record: Option<&mut Recorder>,
        bf16_out: bool,
    ) -> candle_core::Result<Tensor> {
        let pad = self.k / 2;
        if let (Some(packed), None) = (&self.packed, &record) {
            let geometry = cpu_conv::Geometry { k: self.k, stride: self.stride, pad };
            let bf16_out = bf16_out && packed.is_bf16();
            return cpu_conv::conv(xs, packed, &self.bias_host, geometry, residual, relu, bf16_out);
        }
        // The f32 path reads f32 (a bf16 input comes only from the AMX path).
        let xs = &if xs.dtype() == CDType::BF16 && self.weight.dtype() == CDType::F32 {
            xs.to_dtype(CDType::F32)?
        } else {
            xs.clone()
        };
        let (b, h, w, c) = xs.dims4()?;
        let (ho, wo) = ((h + 2 * pad - self.k) / self.stride + 1, (w + 2 * pad - self.k) / self.stride + 1);
        let cols = if self.k == 1 && self.stride == 1 {
            xs.reshape((b * h * w, c))?
        } else {
            im2col(xs, self.k, self.stride, pad)?
        };
        let mut ys = cols.matmul(&self.weight)?;
        if let Some(record) = record {
            if let Some(ab) = record.see(&self.bn, &ys, Some(&self.bias_host), &self.gamma, &self.beta)? {
                ys = affine(&ys, &ab, &[self.c_out])?;
            }
        }
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

/// The stem's 3x3 stride-2 max pool (padding 1) on channels-last f32
/// `[B, H, W, C]` activations on the CPU, after a ReLU: every value is
/// `>= 0`, so leaving the padding out equals torch's `-inf` padding.
pub(super) fn max_pool_after_relu(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = xs.dims4()?;
    let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let (storage, layout) = xs.storage_and_layout();
    let src = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((start, end))) => &v[start..end],
        _ => candle_core::bail!("max pool: needs contiguous f32 activations on the CPU"),
    };
    let mut out = vec![0f32; b * ho * wo * c];
    let per_image = ho * wo * c;
    let threads = candle_core::utils::get_num_threads().clamp(1, b.max(1));
    let images_per_thread = b.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(images_per_thread * per_image).enumerate() {
            scope.spawn(move || {
                for (i, image) in chunk.chunks_exact_mut(per_image).enumerate() {
                    let bi = t * images_per_thread + i;
                    for (o, dst) in image.chunks_exact_mut(c).enumerate() {
                        let (oy, ox) = (o / wo, o % wo);
                        for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                            for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                                let s = ((bi * h + iy) * w + ix) * c;
                                for (d, v) in dst.iter_mut().zip(&src[s..s + c]) {
                                    *d = d.max(*v);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    drop(storage);
    Tensor::from_vec(out, (b, ho, wo, c), xs.device())
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::Error;

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
}
