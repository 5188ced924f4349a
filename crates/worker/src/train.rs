//! Head training: a new `Linear(D, classes)` on cached features, with
//! PyTorch's SGD (momentum, weight decay), StepLR and cross-entropy (or the
//! multi-class hinge loss), epoch by epoch, resumable bit for bit.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::Split;
use crate::features::{FeatureMatrix, FeatureSlice};
use crate::Error;

mod cpu;
mod fused;
mod kernel;

pub use fused::train_fused;

/// The loss the head minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `torch.nn.CrossEntropyLoss()` (mean over the batch).
    CrossEntropy,
    /// `torch.nn.MultiMarginLoss()`: the multi-class SVM hinge loss (p=1, margin=1).
    MultiMargin,
}

/// The hyperparameters of one job's head training.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Mini-batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (0 for plain SGD).
    pub momentum: f64,
    /// Epochs to train.
    pub epochs: usize,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// StepLR: the learning rate is multiplied by `gamma` every `step_size` epochs.
    pub step_size: usize,
    /// StepLR factor.
    pub gamma: f64,
    /// Seed of the head's initialisation and of each epoch's shuffle.
    pub seed: u64,
    /// The loss.
    pub loss: Loss,
}

impl TrainConfig {
    /// The learning rate of 0-based `epoch` under StepLR.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.gamma.powi((epoch / self.step_size) as i32)
    }
}

/// The metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_acc: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub valid_acc: f64,
    /// The learning rate used in the epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
    /// Whether this epoch has the best validation accuracy so far.
    pub is_best: bool,
}

/// Everything needed to continue training after an epoch: head weights,
/// momentum buffers, the epoch count (which fixes the schedule and the next
/// shuffle) and the best accuracy so far.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// `[classes, D]`.
    pub weight: Tensor,
    /// `[classes]`.
    pub bias: Tensor,
    /// SGD momentum buffers, once the first step has been taken.
    pub momentum: Option<(Tensor, Tensor)>,
    /// Best validation accuracy so far.
    pub best_valid_acc: f64,
    /// Epoch (1-based) of the best validation accuracy; 0 before any.
    pub best_epoch: usize,
}

const STATE_FORMAT: &str = "sweep-head-v1";

impl TrainState {
    /// The state as a safetensors file: `head.weight`, `head.bias`, the momentum
    /// buffers, and the counters in the metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut tensors: Vec<(&str, Tensor)> =
            vec![("head.weight", self.weight.clone()), ("head.bias", self.bias.clone())];
        if let Some((w, b)) = &self.momentum {
            tensors.push(("momentum.weight", w.clone()));
            tensors.push(("momentum.bias", b.clone()));
        }
        let data: Vec<(&str, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(name, t)| {
                let v: Vec<f32> = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
                Ok((*name, v.iter().flat_map(|x| x.to_le_bytes()).collect(), t.dims().to_vec()))
            })
            .collect::<Result<_, Error>>()?;
        let views = data
            .iter()
            .map(|(name, bytes, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (*name, v))
                    .map_err(|e| Error::State(e.to_string()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let meta = HashMap::from([
            ("format".to_owned(), STATE_FORMAT.to_owned()),
            ("epoch".to_owned(), self.epoch.to_string()),
            ("best_valid_acc".to_owned(), format!("{:?}", self.best_valid_acc)),
            ("best_epoch".to_owned(), self.best_epoch.to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::State(e.to_string()))
    }

    /// Reads a state written by [`TrainState::to_bytes`].
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<TrainState, Error> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::State(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
            return Err(Error::State(format!("not a {STATE_FORMAT} state")));
        }
        let field = |name: &str| meta.get(name).ok_or_else(|| Error::State(format!("no `{name}` in the metadata")));
        let parse_err = |name: &str| Error::State(format!("bad `{name}` in the metadata"));
        let mut tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        let mut take = |name: &str| tensors.remove(name);
        let weight = take("head.weight").ok_or_else(|| Error::State("no head.weight".to_owned()))?;
        let bias = take("head.bias").ok_or_else(|| Error::State("no head.bias".to_owned()))?;
        let momentum = match (take("momentum.weight"), take("momentum.bias")) {
            (Some(w), Some(b)) => Some((w, b)),
            _ => None,
        };
        Ok(TrainState {
            epoch: field("epoch")?.parse().map_err(|_| parse_err("epoch"))?,
            weight,
            bias,
            momentum,
            best_valid_acc: field("best_valid_acc")?.parse().map_err(|_| parse_err("best_valid_acc"))?,
            best_epoch: field("best_epoch")?.parse().map_err(|_| parse_err("best_epoch"))?,
        })
    }
}

/// An error raised by a sink.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where epochs go: the scheduler implements it (and records to SQLite); the
/// worker only calls it.
pub trait EpochSink {
    /// Called after each epoch, with the state to resume from.
    fn epoch(&mut self, report: &EpochReport, state: &TrainState) -> Result<(), SinkError>;

    /// Polled between batches: `true` abandons the epoch in progress and stops,
    /// leaving the last reported epoch as the consistent point.
    fn should_stop(&self) -> bool {
        false
    }
}

/// How a training run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// Every epoch ran.
    Finished {
        /// Best validation accuracy.
        best_valid_acc: f64,
        /// Its 1-based epoch.
        best_epoch: usize,
    },
    /// The sink asked to stop; `epoch` epochs are done.
    Stopped {
        /// Epochs finished and reported.
        epoch: usize,
    },
}

/// Receives an epoch's 0-based index and its per-step losses.
#[doc(hidden)]
pub type StepLosses<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// The code that trains a head. Not part of the API: benchmarks and tests
/// compare them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeadKernel {
    /// The kernels of `train/kernel.rs` with the widest vectors the CPU has,
    /// for a CPU job; Candle's ops elsewhere (a GPU, or a CPU without AVX2).
    #[default]
    Auto,
    /// Candle's ops.
    Candle,
    /// The kernels with AVX2 and FMA.
    Avx2,
    /// The kernels with AVX-512.
    Avx512,
}

impl HeadKernel {
    /// Whether this kernel can train a job on the CPU of this machine.
    pub fn runs_on_this_cpu(self) -> bool {
        self.isa(&Device::Cpu).is_ok()
    }

    /// The kernels' instruction set for a job on `device`, if they train it.
    fn isa(self, device: &Device) -> Result<Option<kernel::Isa>, Error> {
        use kernel::Isa;
        let isa = match self {
            HeadKernel::Auto if device.is_cpu() => Isa::detect(),
            HeadKernel::Auto | HeadKernel::Candle => None,
            HeadKernel::Avx2 => Some(Isa::Avx2),
            HeadKernel::Avx512 => Some(Isa::Avx512),
        };
        match isa {
            Some(isa) if !device.is_cpu() || !isa.supported() => {
                Err(Error::State(format!("the {isa:?} head kernel cannot run on this device or CPU")))
            }
            isa => Ok(isa),
        }
    }
}

/// f32 GFLOP/s this thread sustains with the head kernels' widest
/// multiply-adds, run for about `seconds`; `None` without AVX2 or AVX-512.
pub(crate) fn fma_gflops(seconds: f64) -> Option<f64> {
    let isa = kernel::Isa::detect()?;
    let calibration = 100_000;
    let start = std::time::Instant::now();
    kernel::fma_rate(isa, calibration);
    let rounds = (calibration as f64 * seconds / start.elapsed().as_secs_f64().max(1e-6)) as u64;
    Some(kernel::fma_rate(isa, rounds.max(calibration)) / 1e9)
}

/// Whether a job on the CPU trains its head on one thread (this CPU runs
/// the head kernels), so that a sweep trains one job per core; otherwise
/// each job spreads its products over Candle's threads.
pub fn heads_train_on_one_thread() -> bool {
    kernel::Isa::detect().is_some()
}

/// Seconds per epoch of `k` heads (lr spread from 0.001 to 0.1, the rest
/// as `cfg`) trained in lockstep on one thread with the CPU kernels, and
/// the heads' summed losses of the last epoch: the benchmark of fused heads.
pub(crate) fn lockstep_seconds(
    features: &FeatureMatrix,
    labels: &[u32],
    classes: usize,
    split: &Split,
    cfg: &TrainConfig,
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let isa = kernel::Isa::detect().ok_or_else(|| Error::State("the head kernels need AVX2 or AVX-512".to_owned()))?;
    let dim = features.dim();
    let mut heads = Vec::with_capacity(k);
    for i in 0..k {
        let (weight, bias) = init_head(dim, classes, i as u64, &Device::Cpu)?;
        let state =
            TrainState { epoch: 0, weight, bias, momentum: None, best_valid_acc: f64::NEG_INFINITY, best_epoch: 0 };
        heads.push(cpu::CpuHead::from_state(isa, &state)?);
    }
    let lrs: Vec<f32> = (0..k).map(|i| (0.001 * 100f64.powf(i as f64 / k.max(2) as f64)) as f32).collect();
    let data = match features.view() {
        FeatureSlice::F32(data) => data,
        FeatureSlice::F16(_) => return Err(Error::State("lockstep heads need f32 features".to_owned())),
    };
    let rows = cpu::Rows { data, dim };
    let (mut seconds, mut losses) = (Vec::new(), Vec::new());
    for epoch in 0..cfg.epochs {
        let started = Instant::now();
        let order = epoch_order(split.train.len(), cfg.seed, epoch);
        losses = cpu::lockstep_epoch(&mut heads, &lrs, &rows, labels, &split.train, &order, cfg);
        for head in &heads {
            cpu::evaluate(head, &rows, labels, &split.valid, cfg.loss);
        }
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok((seconds, losses))
}

/// Test hooks of [`train_with`]: what [`train`] draws itself, made injectable
/// so that a golden test can replay a reference run through the production
/// path. Not part of the API.
#[doc(hidden)]
#[derive(Default)]
pub struct Hooks<'a> {
    /// The code that trains the head.
    pub kernel: HeadKernel,
    /// The order in which 0-based epoch `e` visits the training samples, as
    /// positions in `split.train`; `None`: the seeded shuffle.
    pub order: Option<&'a dyn Fn(usize) -> Vec<u32>>,
    /// Called with each finished epoch's 0-based index and the loss of each
    /// of its steps, before the epoch is checked and reported.
    pub step_losses: Option<&'a mut StepLosses<'a>>,
}

/// The head's initial weights, as `torch.nn.Linear` draws them: weight and bias
/// uniform in ±1/sqrt(fan_in), from the job's seed.
fn init_head(dim: usize, classes: usize, seed: u64, device: &Device) -> Result<(Tensor, Tensor), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bound = 1.0 / (dim as f64).sqrt();
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect() };
    let w = Tensor::from_vec(draw(classes * dim), (classes, dim), device)?;
    let b = Tensor::from_vec(draw(classes), classes, device)?;
    Ok((w, b))
}

/// The state a job starts from: `resume` moved to `device` (checked to be a
/// `[classes, dim]` head), or a new head from `seed`.
fn start_state(
    resume: Option<TrainState>,
    dim: usize,
    classes: usize,
    seed: u64,
    device: &Device,
) -> Result<TrainState, Error> {
    let Some(state) = resume else {
        let (weight, bias) = init_head(dim, classes, seed, device)?;
        return Ok(TrainState {
            epoch: 0,
            weight,
            bias,
            momentum: None,
            best_valid_acc: f64::NEG_INFINITY,
            best_epoch: 0,
        });
    };
    if state.weight.dims() != [classes, dim] {
        return Err(Error::State(format!("head is {:?}, this job needs [{classes}, {dim}]", state.weight.dims())));
    }
    Ok(TrainState {
        weight: state.weight.to_device(device)?,
        bias: state.bias.to_device(device)?,
        momentum: match state.momentum {
            Some((w, b)) => Some((w.to_device(device)?, b.to_device(device)?)),
            None => None,
        },
        ..state
    })
}

/// The order of training samples in 0-based `epoch`: a shuffle seeded by the
/// job's seed and the epoch alone, so a resumed run draws the same orders.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    order
}

/// Samples on the training device: features `[n, D]`, labels `[n]` (u32) and
/// the labels one-hot `[n, classes]` (f32), gathered once per job.
struct Samples {
    x: Tensor,
    y: Tensor,
    onehot: Tensor,
}

impl Samples {
    fn gather(
        features: &FeatureMatrix,
        labels: &[u32],
        idx: &[usize],
        classes: usize,
        device: &Device,
    ) -> Result<Self, Error> {
        let x = features.gather(idx)?.to_device(device)?;
        let mut y = Vec::with_capacity(idx.len());
        let mut onehot = vec![0f32; idx.len() * classes];
        for (row, &i) in idx.iter().enumerate() {
            let label = labels[i];
            if label as usize >= classes {
                return Err(Error::Data {
                    path: Default::default(),
                    line: None,
                    message: format!("sample {i} has label {label}, but there are {classes} classes"),
                });
            }
            y.push(label);
            onehot[row * classes + label as usize] = 1.0;
        }
        Ok(Samples {
            x,
            y: Tensor::from_vec(y, idx.len(), device)?,
            onehot: Tensor::from_vec(onehot, (idx.len(), classes), device)?,
        })
    }
}

/// `x · Wᵀ + b`, as `torch.nn.Linear`.
fn forward(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// A batch's loss (a scalar, mean over the batch as PyTorch's default
/// reduction) and, with `grad`, its gradient with respect to the logits
/// (`[B, C]`), written out rather than taken through autograd.
fn loss_and_grad(
    loss: Loss,
    logits: &Tensor,
    y: &Tensor,
    onehot: &Tensor,
    grad: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (batch, classes) = logits.dims2()?;
    match loss {
        Loss::CrossEntropy => {
            // log_softmax as torch computes it: (x - max) - log(sum(exp(x - max))).
            let shifted = logits.broadcast_sub(&logits.max_keepdim(1)?)?;
            let exp = shifted.exp()?;
            let sum = exp.sum_keepdim(1)?;
            let log_probs = shifted.broadcast_sub(&sum.log()?)?;
            let value = log_probs.gather(&y.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
            // d mean(-log_softmax(x)[y]) / dx = (softmax(x) - onehot(y)) / B.
            let grad = if grad { Some(((exp.broadcast_div(&sum)? - onehot)? / batch as f64)?) } else { None };
            Ok((value, grad))
        }
        Loss::MultiMargin => {
            // sum over j != y of max(0, 1 - x[y] + x[j]), divided by the class count.
            let target = logits.gather(&y.unsqueeze(1)?, 1)?;
            let margins = (logits.broadcast_sub(&target)? + 1.0)?;
            let others = (1.0 - onehot)?;
            let value = ((margins.relu()? * &others)?.sum(1)? / classes as f64)?.mean_all()?;
            // Each active margin (> 0) adds 1/(B C) to x[j] and takes 1/(B C) from x[y].
            let grad = if grad {
                let active = (margins.gt(0f32)?.to_dtype(DType::F32)? * &others)?;
                let taken = onehot.broadcast_mul(&active.sum_keepdim(1)?)?;
                Some(((active - taken)? / (batch * classes) as f64)?)
            } else {
                None
            };
            Ok((value, grad))
        }
    }
}

/// Predictions equal to the labels, counted on the device (a u32 scalar).
fn count_correct(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    logits.argmax(D::Minus1)?.eq(y)?.to_dtype(DType::U32)?.sum_all()
}

/// `torch.optim.SGD`'s step for one parameter: `d = g + wd * p`; `buf = d` on
/// the first step, else `momentum * buf + d`; `p -= lr * buf` (without
/// momentum, `p -= lr * d`).
///
/// On the CPU it updates `param` and `buf` in place, in one pass each
/// ([`MomentumStep`], [`ParamStep`]); elsewhere it chains Candle ops into new
/// tensors. Both round the same float32 operations in the same order.
#[derive(Debug, Clone, Copy)]
struct Sgd {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}

impl Sgd {
    fn new(cfg: &TrainConfig, lr: f64) -> Self {
        Sgd { lr: lr as f32, momentum: cfg.momentum as f32, weight_decay: cfg.weight_decay as f32 }
    }

    /// One step: `buf` is `None` before the first (and always without
    /// momentum). Returns the new parameter and buffer; on the CPU they are
    /// `param` and `buf` themselves, written in place, so neither may be
    /// shared with a tensor that must keep its value.
    fn step(&self, param: Tensor, grad: &Tensor, buf: Option<Tensor>) -> candle_core::Result<(Tensor, Tensor)> {
        if param.device().is_cpu() {
            let first = buf.is_none() || self.momentum == 0.0;
            let buf = match buf {
                Some(buf) => buf,
                None => param.zeros_like()?,
            };
            buf.inplace_op3(grad, &param, &MomentumStep { sgd: *self, first })?;
            param.inplace_op2(&buf, &ParamStep { lr: self.lr })?;
            return Ok((param, buf));
        }
        let d =
            if self.weight_decay != 0.0 { (grad + (&param * f64::from(self.weight_decay))?)? } else { grad.clone() };
        let buf = match buf {
            Some(buf) if self.momentum != 0.0 => ((buf * f64::from(self.momentum))? + d)?,
            _ => d,
        };
        let param = (param - (&buf * f64::from(self.lr))?)?;
        Ok((param, buf))
    }
}

/// The contiguous f32 elements of a CPU tensor's storage.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("the head's SGD step needs contiguous f32 tensors"),
    }
}

/// In place on `buf`, with sources `grad` and `param`: `d = g + wd * p`, then
/// `buf = d` (first step) or `buf = buf * momentum + d` (torch's
/// `buf.mul_(momentum).add_(d)`).
struct MomentumStep {
    sgd: Sgd,
    first: bool,
}

impl InplaceOp3 for MomentumStep {
    fn name(&self) -> &'static str {
        "sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        buf: &mut CpuStorage,
        buf_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
        param: &CpuStorage,
        param_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (grad, param) = (f32_slice(grad, grad_layout)?, f32_slice(param, param_layout)?);
        let buf = match (buf, buf_layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => &mut v[start..end],
            _ => candle_core::bail!("the head's SGD step needs contiguous f32 tensors"),
        };
        if buf.len() != grad.len() || buf.len() != param.len() {
            candle_core::bail!(
                "sgd-momentum: {} buffer, {} gradient, {} parameter elements",
                buf.len(),
                grad.len(),
                param.len()
            );
        }
        let Sgd { momentum, weight_decay, .. } = self.sgd;
        for ((b, &g), &p) in buf.iter_mut().zip(grad).zip(param) {
            let d = if weight_decay != 0.0 { g + p * weight_decay } else { g };
            *b = if self.first { d } else { *b * momentum + d };
        }
        Ok(())
    }
}

/// In place on `param`, with source `buf`: `param -= lr * buf` (torch's
/// `param.add_(buf, alpha=-lr)`).
struct ParamStep {
    lr: f32,
}

impl InplaceOp2 for ParamStep {
    fn name(&self) -> &'static str {
        "sgd-param"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        buf: &CpuStorage,
        buf_layout: &Layout,
    ) -> candle_core::Result<()> {
        let buf = f32_slice(buf, buf_layout)?;
        let param = match (param, param_layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => &mut v[start..end],
            _ => candle_core::bail!("the head's SGD step needs contiguous f32 tensors"),
        };
        if buf.len() != param.len() {
            candle_core::bail!("sgd-param: {} parameter, {} buffer elements", param.len(), buf.len());
        }
        for (p, &b) in param.iter_mut().zip(buf) {
            *p -= b * self.lr;
        }
        Ok(())
    }
}

/// What one epoch of SGD measured: each step's loss, and the correct predictions.
pub(crate) struct EpochSteps {
    losses: Vec<f32>,
    correct: u64,
}

/// One epoch of SGD over the training samples in `order` (positions in
/// `set`), updating `state`'s head and momentum buffers. The losses and
/// counts stay on the device until the epoch ends. `None` when the sink asked
/// to stop (the state is then mid-epoch and must be dropped).
fn sgd_epoch(
    state: &mut TrainState,
    set: &Samples,
    order: &[u32],
    cfg: &TrainConfig,
    lr: f64,
    sink: &dyn EpochSink,
) -> Result<Option<EpochSteps>, Error> {
    let device = set.x.device();
    let sgd = Sgd::new(cfg, lr);
    let order_t = Tensor::from_slice(order, order.len(), device)?;
    let mut losses = Vec::with_capacity(order.len().div_ceil(cfg.batch_size));
    let mut correct = Tensor::zeros((), DType::U32, device)?;
    // Private copies: the CPU step writes in place, and the state's tensors
    // may be held by the sink (or the caller that resumed from them).
    let mut weight = state.weight.copy()?;
    let mut bias = state.bias.copy()?;
    let (mut buf_weight, mut buf_bias) = match &state.momentum {
        Some((w, b)) => (Some(w.copy()?), Some(b.copy()?)),
        None => (None, None),
    };
    for start in (0..order.len()).step_by(cfg.batch_size) {
        if sink.should_stop() {
            return Ok(None);
        }
        let idx = order_t.narrow(0, start, cfg.batch_size.min(order.len() - start))?;
        let xb = set.x.index_select(&idx, 0)?;
        let yb = set.y.index_select(&idx, 0)?;
        let onehot = set.onehot.index_select(&idx, 0)?;
        let logits = forward(&xb, &weight, &bias)?;
        let (loss, grad) = loss_and_grad(cfg.loss, &logits, &yb, &onehot, true)?;
        let grad = grad.ok_or_else(|| Error::State("no gradient for the head".to_owned()))?;
        losses.push(loss);
        correct = (correct + count_correct(&logits, &yb)?)?;
        // Linear's backward: dW = gᵀ · x, db = the sum of g over the batch.
        let grad_weight = grad.t()?.matmul(&xb)?;
        let grad_bias = grad.sum(0)?;
        let (w, bw) = sgd.step(weight, &grad_weight, buf_weight.take())?;
        let (b, bb) = sgd.step(bias, &grad_bias, buf_bias.take())?;
        (weight, bias) = (w, b);
        if cfg.momentum != 0.0 {
            (buf_weight, buf_bias) = (Some(bw), Some(bb));
        }
    }
    state.weight = weight;
    state.bias = bias;
    if let (Some(w), Some(b)) = (buf_weight, buf_bias) {
        state.momentum = Some((w, b));
    }
    let losses = if losses.is_empty() { Vec::new() } else { Tensor::stack(&losses, 0)?.to_vec1::<f32>()? };
    Ok(Some(EpochSteps { losses, correct: u64::from(correct.to_scalar::<u32>()?) }))
}

/// Mean loss and number correct over a set, without gradients.
fn evaluate(set: &Samples, state: &TrainState, loss: Loss) -> Result<(f64, u64), Error> {
    let n = set.x.dim(0)?;
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    let chunk = 4096;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = forward(&set.x.narrow(0, start, len)?, &state.weight, &state.bias)?;
        let y = set.y.narrow(0, start, len)?;
        let (value, _) = loss_and_grad(loss, &logits, &y, &set.onehot.narrow(0, start, len)?, false)?;
        loss_sum += f64::from(value.to_scalar::<f32>()?) * len as f64;
        correct += u64::from(count_correct(&logits, &y)?.to_scalar::<u32>()?);
    }
    Ok((loss_sum / n as f64, correct))
}

/// What trains a job's head.
enum Engine<'a> {
    /// Candle's ops, on the job's device, over the sets gathered there.
    Candle { train_set: Samples, valid_set: Samples },
    /// The CPU kernels, over the rows of the features in place.
    Kernels { head: cpu::CpuHead, rows: cpu::Rows<'a> },
    /// The CPU kernels, over f16 rows converted a batch at a time.
    HalfKernels { head: cpu::CpuHead, rows: cpu::HalfRows<'a> },
}

/// One job's training: its data, its hyperparameters and where it starts.
#[derive(Debug, Clone)]
pub struct TrainJob<'a> {
    /// `[N, D]` features of the whole data set (mapped from the cache, or in
    /// memory): the CPU kernels read rows in place, the Candle path gathers
    /// the train and valid rows onto its device.
    pub features: &'a FeatureMatrix,
    /// `N` class indices, one per row of `features`.
    pub labels: &'a [u32],
    /// The number of classes: the head's outputs.
    pub classes: usize,
    /// The rows that train and the rows that validate.
    pub split: &'a Split,
    /// The hyperparameters.
    pub config: &'a TrainConfig,
    /// The state to continue from (a resumed job); `None` starts a new head.
    pub resume: Option<TrainState>,
    /// Where the head trains.
    pub device: &'a Device,
}

/// Trains a head on `job.features` with `job.labels`, over `job.split`,
/// reporting each epoch to `sink`. With `job.resume`, continues from that
/// state: the later epochs equal those of an uninterrupted run, bit for bit.
///
/// Each epoch is PyTorch's: shuffled mini-batches, the mean loss of each, its
/// gradient, one `torch.optim.SGD` step (weight decay, momentum), the
/// learning rate of StepLR; then a pass over the valid samples. A loss that is
/// not finite fails the job with [`Error::NonFinite`]; that epoch is never
/// reported.
pub fn train(job: TrainJob<'_>, sink: &mut dyn EpochSink) -> Result<TrainOutcome, Error> {
    train_with(job, sink, Hooks::default())
}

/// [`train`] with its test hooks. Not part of the API.
#[doc(hidden)]
pub fn train_with(job: TrainJob<'_>, sink: &mut dyn EpochSink, mut hooks: Hooks<'_>) -> Result<TrainOutcome, Error> {
    let TrainJob { features, labels, classes, split, config: cfg, resume, device } = job;
    let dim = features.dim();
    let n_train = split.train.len();
    for &i in split.train.iter().chain(&split.valid) {
        let label = *labels.get(i).ok_or_else(|| Error::State(format!("sample {i} has no label")))?;
        if label as usize >= classes {
            return Err(Error::Data {
                path: Default::default(),
                line: None,
                message: format!("sample {i} has label {label}, but there are {classes} classes"),
            });
        }
    }

    let mut state = start_state(resume, dim, classes, cfg.seed, device)?;

    // The kernels read the rows in place from the features (a mapped cache
    // entry: nothing copied); Candle's ops take each set gathered onto the device.
    let mut engine = match hooks.kernel.isa(device)? {
        Some(isa) => {
            let head = cpu::CpuHead::from_state(isa, &state)?;
            match features.view() {
                FeatureSlice::F32(data) => Engine::Kernels { head, rows: cpu::Rows { data, dim } },
                FeatureSlice::F16(data) => Engine::HalfKernels { head, rows: cpu::HalfRows { data, dim } },
            }
        }
        None => Engine::Candle {
            train_set: Samples::gather(features, labels, &split.train, classes, device)?,
            valid_set: Samples::gather(features, labels, &split.valid, classes, device)?,
        },
    };

    while state.epoch < cfg.epochs {
        let epoch = state.epoch; // 0-based index of the epoch being run
        let started = Instant::now();
        let lr = cfg.lr_at(epoch);
        let order = match hooks.order {
            Some(order) => order(epoch),
            None => epoch_order(n_train, cfg.seed, epoch),
        };
        if order.len() != n_train {
            return Err(Error::State(format!("an epoch order of {} samples for {n_train}", order.len())));
        }
        let steps = match &mut engine {
            Engine::Candle { train_set, .. } => sgd_epoch(&mut state, train_set, &order, cfg, lr, sink)?,
            Engine::Kernels { head, rows } => cpu::sgd_epoch(head, rows, labels, &split.train, &order, cfg, lr, sink)?,
            Engine::HalfKernels { head, rows } => {
                cpu::sgd_epoch_half(head, rows, labels, &split.train, &order, cfg, lr, sink)?
            }
        };
        let Some(steps) = steps else {
            return Ok(TrainOutcome::Stopped { epoch });
        };
        if let Some(step_losses) = hooks.step_losses.as_mut() {
            step_losses(epoch, &steps.losses);
        }
        if let Some(&bad) = steps.losses.iter().find(|loss| !loss.is_finite()) {
            return Err(Error::NonFinite { epoch: epoch + 1, phase: "train", value: f64::from(bad) });
        }
        let loss_sum: f64 = steps
            .losses
            .iter()
            .zip(order.chunks(cfg.batch_size))
            .map(|(&loss, batch)| f64::from(loss) * batch.len() as f64)
            .sum();
        let (valid_loss, valid_correct) = match &engine {
            Engine::Candle { valid_set, .. } => evaluate(valid_set, &state, cfg.loss)?,
            Engine::Kernels { head, rows } => {
                head.store(&mut state)?;
                cpu::evaluate(head, rows, labels, &split.valid, cfg.loss)
            }
            Engine::HalfKernels { head, rows } => {
                head.store(&mut state)?;
                cpu::evaluate_half(head, rows, labels, &split.valid, cfg.loss)
            }
        };
        if !valid_loss.is_finite() {
            return Err(Error::NonFinite { epoch: epoch + 1, phase: "valid", value: valid_loss });
        }
        let valid_acc = valid_correct as f64 / split.valid.len() as f64;
        // The paper's `if epoch_acc > best_acc`: the first of equal accuracies stays best.
        let is_best = valid_acc > state.best_valid_acc;
        state.epoch = epoch + 1;
        if is_best {
            state.best_valid_acc = valid_acc;
            state.best_epoch = epoch + 1;
        }
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / n_train as f64,
            train_acc: steps.correct as f64 / n_train as f64,
            valid_loss,
            valid_acc,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            is_best,
        };
        tracing::debug!(epoch = report.epoch, train_loss = report.train_loss, valid_acc, "epoch done");
        sink.epoch(&report, &state).map_err(Error::Sink)?;
    }
    Ok(TrainOutcome::Finished { best_valid_acc: state.best_valid_acc, best_epoch: state.best_epoch })
}
