//! Head training: a new `Linear(D, classes)` on cached features, with
//! PyTorch's SGD (momentum, weight decay), StepLR and cross-entropy (or the
//! multi-class hinge loss), epoch by epoch, resumable bit for bit.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::Split;
use crate::Error;

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

/// The order of training samples in 0-based `epoch`: a shuffle seeded by the
/// job's seed and the epoch alone, so a resumed run draws the same orders.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    order
}

fn loss_fn(loss: Loss, logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    match loss {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(logits, labels),
        Loss::MultiMargin => {
            // sum over j != y of max(0, 1 - x[y] + x[j]), divided by the class count.
            let classes = logits.dim(1)?;
            let target = logits.gather(&labels.unsqueeze(1)?, 1)?;
            let margins = (logits.broadcast_sub(&target)? + 1.0)?.relu()?;
            let onehot = candle_nn::encoding::one_hot(labels.clone(), classes, 1f32, 0f32)?;
            let margins = (margins * (1.0 - onehot)?)?;
            (margins.sum(1)? / classes as f64)?.mean_all()
        }
    }
}

/// Trains a head on `features` (`[N, D]`), with `labels` (`N` class indices),
/// over `split`, reporting each epoch to `sink`. With `resume`, continues from
/// that state: the later epochs equal those of an uninterrupted run.
#[allow(clippy::too_many_arguments)]
pub fn train(
    features: &Tensor,
    labels: &[u32],
    classes: usize,
    split: &Split,
    cfg: &TrainConfig,
    resume: Option<TrainState>,
    sink: &mut dyn EpochSink,
    device: &Device,
) -> Result<TrainOutcome, Error> {
    let dim = features.dim(1)?;
    let gather = |idx: &[usize]| -> Result<(Tensor, Tensor), Error> {
        let ids = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), features.device())?;
        let x = features.index_select(&ids, 0)?.to_device(device)?;
        let y = Tensor::from_vec(idx.iter().map(|&i| labels[i]).collect::<Vec<_>>(), idx.len(), device)?;
        Ok((x, y))
    };
    let (x_train, y_train) = gather(&split.train)?;
    let (x_valid, y_valid) = gather(&split.valid)?;

    let mut state = match resume {
        Some(state) => {
            if state.weight.dims() != [classes, dim] {
                return Err(Error::State(format!(
                    "head is {:?}, this job needs [{classes}, {dim}]",
                    state.weight.dims()
                )));
            }
            TrainState {
                weight: state.weight.to_device(device)?,
                bias: state.bias.to_device(device)?,
                momentum: match state.momentum {
                    Some((w, b)) => Some((w.to_device(device)?, b.to_device(device)?)),
                    None => None,
                },
                ..state
            }
        }
        None => {
            let (weight, bias) = init_head(dim, classes, cfg.seed, device)?;
            TrainState { epoch: 0, weight, bias, momentum: None, best_valid_acc: f64::NEG_INFINITY, best_epoch: 0 }
        }
    };
    let w = Var::from_tensor(&state.weight)?;
    let b = Var::from_tensor(&state.bias)?;
    let n_train = split.train.len();

    while state.epoch < cfg.epochs {
        let epoch = state.epoch; // 0-based index of the epoch being run
        let started = Instant::now();
        let lr = cfg.lr_at(epoch);
        let order = epoch_order(n_train, cfg.seed, epoch);
        let mut loss_sum = 0f64;
        let mut correct = 0u64;
        for chunk in order.chunks(cfg.batch_size) {
            if sink.should_stop() {
                return Ok(TrainOutcome::Stopped { epoch });
            }
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let xb = x_train.index_select(&idx, 0)?;
            let yb = y_train.index_select(&idx, 0)?;
            let logits = xb.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            let loss = loss_fn(cfg.loss, &logits, &yb)?;
            let grads = loss.backward()?;
            let batch_loss = loss.to_scalar::<f32>()? as f64;
            if !batch_loss.is_finite() {
                return Err(Error::NonFinite { epoch: epoch + 1, phase: "train", value: batch_loss });
            }
            loss_sum += batch_loss * chunk.len() as f64;
            correct += count_correct(&logits, &yb)?;

            // torch.optim.SGD: d = g + wd * p; buf = d (first step) or momentum * buf + d; p -= lr * buf.
            let step = |var: &Var, buf: Option<&Tensor>| -> Result<Tensor, Error> {
                let g = grads.get(var).ok_or_else(|| Error::State("no gradient for the head".to_owned()))?;
                let d = if cfg.weight_decay != 0.0 { (g + (var.as_tensor() * cfg.weight_decay)?)? } else { g.clone() };
                let buf = match buf {
                    Some(buf) if cfg.momentum != 0.0 => ((buf * cfg.momentum)? + d)?,
                    _ => d,
                };
                var.set(&(var.as_tensor() - (&buf * lr)?)?)?;
                Ok(buf)
            };
            let bw = step(&w, state.momentum.as_ref().map(|m| &m.0))?;
            let bb = step(&b, state.momentum.as_ref().map(|m| &m.1))?;
            if cfg.momentum != 0.0 {
                state.momentum = Some((bw, bb));
            }
        }
        let (valid_loss, valid_correct) = evaluate(&x_valid, &y_valid, &w, &b, cfg.loss)?;
        if !valid_loss.is_finite() {
            return Err(Error::NonFinite { epoch: epoch + 1, phase: "valid", value: valid_loss });
        }
        let valid_acc = valid_correct as f64 / split.valid.len() as f64;
        let is_best = valid_acc > state.best_valid_acc;
        state.epoch = epoch + 1;
        state.weight = w.as_tensor().copy()?;
        state.bias = b.as_tensor().copy()?;
        if is_best {
            state.best_valid_acc = valid_acc;
            state.best_epoch = epoch + 1;
        }
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / n_train as f64,
            train_acc: correct as f64 / n_train as f64,
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

fn count_correct(logits: &Tensor, labels: &Tensor) -> candle_core::Result<u64> {
    let predicted = logits.argmax(D::Minus1)?;
    predicted.eq(labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>().map(u64::from)
}

/// Mean loss and number correct over a set, without gradients.
fn evaluate(x: &Tensor, y: &Tensor, w: &Var, b: &Var, loss: Loss) -> Result<(f64, u64), Error> {
    let n = x.dim(0)?;
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    let chunk = 4096;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let xb = x.narrow(0, start, len)?;
        let yb = y.narrow(0, start, len)?;
        let logits = xb.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?.detach();
        loss_sum += loss_fn(loss, &logits, &yb)?.to_scalar::<f32>()? as f64 * len as f64;
        correct += count_correct(&logits, &yb)?;
    }
    Ok((loss_sum / n as f64, correct))
}
