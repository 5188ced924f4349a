//! The ResNet: a stem convolution (NCHW, as candle's `conv2d`), then the
//! residual blocks channels-last, then the global average pool.

use candle_core::{DType as CDType, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use super::ops::{affine, fold_bn, max_pool_after_relu, BnStats, ConvBn, Pack, Recorder};
use super::Arch;

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    /// A bottleneck block with its stride on the other convolution: on the
    /// 3x3 (`conv2`, v1.5's) instead of the first 1x1 (`conv1`, v1's), or
    /// the other way round. `None` for a block without a stride, or a basic one.
    fn other_variant(&self) -> Option<Block> {
        let [conv1, conv2, conv3] = &self.convs[..] else { return None };
        let (s1, s2) = (conv1.stride(), conv2.stride());
        if s1 == s2 {
            return None;
        }
        let convs = vec![conv1.with_stride(s2), conv2.with_stride(s1), conv3.clone()];
        Some(Block { convs, downsample: self.downsample.clone() })
    }

    /// Channels-last in and out; with `record`, what each batch norm saw.
    fn forward(&self, xs: &Tensor, mut record: Option<&mut Recorder>) -> candle_core::Result<Tensor> {
        let (last, first) = self.convs.split_last().expect("a block has convolutions");
        let mut ys = xs.clone();
        for conv in first {
            // Its output only feeds the next convolution: bf16 where that
            // one reads bf16 anyway.
            ys = conv.forward(&ys, None, true, record.as_deref_mut(), true)?;
        }
        // The shortcut and the block's output stay f32 (the residual stream).
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward(xs, None, false, record.as_deref_mut(), false)?,
            None => xs.clone(),
        };
        last.forward(&ys, Some(&shortcut), true, record, false)
    }
}

/// What [`ResNet::probe`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The stem's and `layer1`'s batch norms, in network order.
    pub stats: Vec<BnStats>,
    /// ResNet-50 only: `layer2.0`'s batch norms with the block's stride
    /// where the backbone puts it, and where the other variant does.
    pub layer2: Option<(Vec<BnStats>, Vec<BnStats>)>,
}

/// The network of a [`super::Backbone`], its batch norms folded.
pub(super) struct ResNet {
    stem: Conv2d,
    /// The stem as a channels-last convolution on the CPU kernels, when the
    /// network runs on them.
    stem_packed: Option<ConvBn>,
    /// The stem's batch norm weight and bias, for [`BnStats`].
    stem_bn: (Vec<f32>, Vec<f32>),
    blocks: Vec<Block>,
    pub(super) arch: Arch,
    pub(super) dtype: CDType,
}

impl ResNet {
    /// Builds the network from torchvision-named tensors, folding each batch
    /// norm into its convolution.
    /// With `pack` (not `No`), every convolution also keeps its weight
    /// packed for the CPU kernels (see [`super::cpu_conv`]), the stem's as a
    /// channels-last convolution of its own (`stem_packed`).
    pub(super) fn build(arch: Arch, vb: VarBuilder, pack: Pack) -> candle_core::Result<ResNet> {
        let (w, bias) = fold_bn(&vb, "conv1", "bn1", 3, 64, 7)?;
        let cfg = Conv2dConfig { padding: 3, stride: 2, ..Default::default() };
        let stem = Conv2d::new(w.to_dtype(vb.dtype())?, Some(bias.to_dtype(vb.dtype())?), cfg);
        let host = |part: &str| vb.get(64, &format!("bn1.{part}"))?.to_dtype(CDType::F32)?.to_vec1::<f32>();
        let stem_bn = (host("weight")?, host("bias")?);
        let stem_packed = match pack {
            Pack::No => None,
            _ => Some(ConvBn::new(&vb, "conv1", "bn1", 3, 64, 7, 2)?.packed(pack)?).filter(ConvBn::is_packed),
        };
        let conv_bn = |conv: &str, bn: &str, c_in, c_out, k, stride| {
            ConvBn::new(&vb, conv, bn, c_in, c_out, k, stride)?.packed(pack)
        };
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
                        conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1"), c_in, width, 1, s1)?,
                        conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2"), width, width, 3, s2)?,
                        conv_bn(&format!("{p}.conv3"), &format!("{p}.bn3"), width, c_out, 1, 1)?,
                    ];
                    (convs, c_out)
                } else {
                    let convs = vec![
                        conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1"), c_in, width, 3, stride)?,
                        conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2"), width, width, 3, 1)?,
                    ];
                    (convs, width)
                };
                let downsample = if stride != 1 || c_in != c_out {
                    let (conv, bn) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    Some(conv_bn(&conv, &bn, c_in, c_out, 1, stride)?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                c_in = c_out;
            }
        }
        Ok(ResNet { stem, stem_packed, stem_bn, blocks, arch, dtype: vb.dtype() })
    }

    /// Features of a batch: `[B, 3, S, S]` images in, `[B, D]` f32 out.
    pub(super) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.run(xs, None, self.blocks.len())
    }

    /// What each batch norm saw of a batch of `[B, 3, S, S]` images, in
    /// network order (the stem's first), up to the end of `layer1` only
    /// (what the sanity check reads), or, with `calibrate`, of the whole
    /// network with each batch norm normalising by the batch's own statistics
    /// instead (see [`Recorder`]).
    pub(super) fn bn_stats(&self, xs: &Tensor, calibrate: bool) -> candle_core::Result<Vec<BnStats>> {
        let mut record = Recorder { stats: Vec::new(), calibrate };
        let blocks = if calibrate { self.blocks.len() } else { self.arch.blocks()[0] };
        self.run(xs, Some(&mut record), blocks)?;
        Ok(record.stats)
    }

    /// What the sanity check measures of a batch of `[B, 3, S, S]` images:
    /// [`ResNet::bn_stats`] (the stem and `layer1`) and, for a ResNet-50,
    /// what the batch norms of `layer2`'s first block see with its stride
    /// where this network puts it and where the other variant (v1 or v1.5)
    /// does, on the same `layer1` output.
    pub(super) fn probe(&self, xs: &Tensor) -> candle_core::Result<Probe> {
        let mut record = Recorder { stats: Vec::new(), calibrate: false };
        let first = self.arch.blocks()[0];
        let ys = self.run(xs, Some(&mut record), first)?;
        let block = &self.blocks[first];
        let layer2 = match block.other_variant() {
            Some(other) if self.arch.bottleneck() => {
                let mut this = Recorder { stats: Vec::new(), calibrate: false };
                block.forward(&ys, Some(&mut this))?;
                let mut that = Recorder { stats: Vec::new(), calibrate: false };
                other.forward(&ys, Some(&mut that))?;
                Some((this.stats, that.stats))
            }
            _ => None,
        };
        Ok(Probe { stats: record.stats, layer2 })
    }

    /// What the stem's batch norm (`bn1`) saw of a batch: the first layer only.
    pub(super) fn stem_stats(&self, xs: &Tensor) -> candle_core::Result<BnStats> {
        let mut record = Recorder { stats: Vec::new(), calibrate: false };
        self.run(xs, Some(&mut record), 0)?;
        record.stats.pop().ok_or_else(|| candle_core::Error::Msg("the stem recorded nothing".to_owned()))
    }

    /// The stem (as candle's `conv2d`, NCHW), its ReLU and max pool:
    /// channels-last `[B, H/4, W/4, 64]` out.
    fn stem(&self, xs: &Tensor, record: Option<&mut Recorder>) -> candle_core::Result<Tensor> {
        let mut stem = self.stem.forward(xs)?;
        if let Some(record) = record {
            let (b, c, h, w) = stem.dims4()?;
            let ys = stem.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
            if let Some(ab) = record.see("bn1", &ys, None, &self.stem_bn.0, &self.stem_bn.1)? {
                stem = affine(&stem, &ab, &[1, c, 1, 1])?;
            }
        }
        stem.relu()?
            // After a ReLU every value is >= 0, so edge padding equals torch's -inf padding.
            .pad_with_same(D::Minus1, 1, 1)?
            .pad_with_same(D::Minus2, 1, 1)?
            .max_pool2d_with_stride(3, 2)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }

    /// The forward pass through the first `blocks` residual blocks (all of
    /// them: the features; fewer: the last block's activations).
    fn run(&self, xs: &Tensor, mut record: Option<&mut Recorder>, blocks: usize) -> candle_core::Result<Tensor> {
        let xs = xs.to_dtype(self.dtype)?;
        let mut xs = match (&self.stem_packed, &record) {
            (Some(stem), None) => {
                let xs = xs.permute((0, 2, 3, 1))?.contiguous()?;
                max_pool_after_relu(&stem.forward(&xs, None, true, None, false)?)?
            }
            _ => self.stem(&xs, record.as_deref_mut())?,
        };
        for block in &self.blocks[..blocks] {
            xs = block.forward(&xs, record.as_deref_mut())?;
        }
        if blocks < self.blocks.len() {
            return Ok(xs);
        }
        // Global average pool over the channels-last [B, H, W, C].
        let (b, h, w, c) = xs.dims4()?;
        xs.reshape((b, h * w, c))?.mean(1)?.to_dtype(CDType::F32)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backbone::random_weights;
    use crate::Error;

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
            let theirs = reference(vb.clone())?;
            // 67: odd sizes after the stem (34, 17, 9, 5, 3) test the padding of strided convolutions.
            let x = Tensor::randn(0f32, 1f32, (2, 3, 67, 67), &Device::Cpu)?;
            let b = theirs.forward(&x)?;
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
            // Candle's matrix product, and the f32 kernel where the CPU has it.
            let mut packs = vec![Pack::No];
            if crate::backbone::cpu_conv::f32_available() {
                packs.push(Pack::F32);
            } else {
                eprintln!("skipped the f32 kernel: this CPU has no AVX-512");
            }
            for pack in packs {
                let ours = ResNet::build(arch, vb.clone(), pack)?;
                assert_eq!(ours.stem_packed.is_some(), pack != Pack::No);
                let a = ours.forward(&x)?;
                assert_eq!(a.dims(), &[2, arch.feature_dim()]);
                let diff = a.sub(&b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let at = format!("{} {pack:?}", arch.name());
                assert!(diff <= 1e-4 * scale.max(1e-6), "{at}: max diff {diff} at scale {scale}");
            }
        }
        Ok(())
    }
}
