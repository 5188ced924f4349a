//! Many heads trained as one (issue 12). Heads that share the features, the
//! split, the batch size, the shuffling seed, the loss and the epoch they are
//! at see the same mini-batches in the same order, so one product `[B, D] ×
//! [D, K·C]` gives the logits of all K heads and one `[K·C, B] × [B, D]` their
//! weight gradients; everything else (the loss, SGD with each head's lr,
//! momentum and weight decay, StepLR) is elementwise, each head on its own
//! rows. On a GPU that is one kernel launch where K heads alone take K.
//!
//! Each head's arithmetic is the alone path's (`train.rs`, Candle's ops)
//! element for element; only the products' summation order may differ with
//! their shapes, so a head's losses agree with its run alone to float32
//! rounding, not bit for bit. A head that finishes, fails, is pruned or is
//! stopped leaves the group; the others go on unchanged.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};

use super::{epoch_order, start_state, EpochReport, EpochSink, Loss, Samples, TrainJob, TrainOutcome, TrainState};
use crate::Error;

/// One head of the group.
struct Head {
    /// Its place in the caller's jobs and sinks.
    index: usize,
    state: TrainState,
}

/// Trains `jobs` as one group, each reporting its epochs to the sink of the
/// same index; returns each job's outcome, in order. The jobs must share the
/// features, labels, classes, split and device, the batch size, the seed and
/// the loss, and start at the same epoch: otherwise every job fails with
/// [`Error::State`] before any work.
pub fn train_fused(jobs: Vec<TrainJob<'_>>, sinks: &mut [&mut dyn EpochSink]) -> Vec<Result<TrainOutcome, Error>> {
    let n = jobs.len();
    match fused(jobs, sinks) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let message = e.to_string();
            (0..n).map(|_| Err(Error::State(message.clone()))).collect()
        }
    }
}

/// [`train_fused`], failing the whole group on an error that is not one head's.
fn fused(jobs: Vec<TrainJob<'_>>, sinks: &mut [&mut dyn EpochSink]) -> Result<Vec<Result<TrainOutcome, Error>>, Error> {
    let Some(first) = jobs.first().cloned() else { return Ok(Vec::new()) };
    if sinks.len() != jobs.len() {
        return Err(Error::State(format!("{} fused heads with {} sinks", jobs.len(), sinks.len())));
    }
    let TrainJob { features, labels, classes, split, device, .. } = first;
    let cfg0 = first.config;
    let start = first.resume.as_ref().map_or(0, |s| s.epoch);
    for job in &jobs {
        let c = job.config;
        let same = std::ptr::eq(job.features, features)
            && std::ptr::eq(job.labels, labels)
            && std::ptr::eq(job.split, split)
            && job.classes == classes
            && job.device.same_device(device)
            && (c.batch_size, c.seed, c.loss) == (cfg0.batch_size, cfg0.seed, cfg0.loss)
            && job.resume.as_ref().map_or(0, |s| s.epoch) == start;
        if !same {
            return Err(Error::State(
                "fused heads must share the features, split, device, batch size, seed, loss and epoch".to_owned(),
            ));
        }
    }
    let dim = features.dim();
    let n_train = split.train.len();
    let (batch, seed, loss) = (cfg0.batch_size, cfg0.seed, cfg0.loss);
    let train_set = Samples::gather(features, labels, &split.train, classes, device)?;
    let valid_set = Samples::gather(features, labels, &split.valid, classes, device)?;
    let configs: Vec<_> = jobs.iter().map(|j| j.config).collect();

    let mut outcomes: Vec<Option<Result<TrainOutcome, Error>>> = (0..jobs.len()).map(|_| None).collect();
    let mut heads = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.into_iter().enumerate() {
        let state = match start_state(job.resume, dim, classes, job.config.seed, device) {
            Ok(state) => state,
            Err(e) => {
                outcomes[index] = Some(Err(e));
                continue;
            }
        };
        heads.push(Head { index, state });
    }

    let mut epoch = start;
    loop {
        // Heads leave at an epoch's boundary: done, or stopped by their sink.
        heads.retain(|h| {
            let cfg = configs[h.index];
            if h.state.epoch >= cfg.epochs {
                let s = &h.state;
                outcomes[h.index] =
                    Some(Ok(TrainOutcome::Finished { best_valid_acc: s.best_valid_acc, best_epoch: s.best_epoch }));
                false
            } else if sinks[h.index].should_stop() {
                outcomes[h.index] = Some(Ok(TrainOutcome::Stopped { epoch: h.state.epoch }));
                false
            } else {
                true
            }
        });
        if heads.is_empty() {
            break;
        }
        let started = Instant::now();
        let order = epoch_order(n_train, seed, epoch);
        let lrs: Vec<f64> = heads.iter().map(|h| configs[h.index].lr_at(epoch)).collect();
        let group = Group::new(&heads, &configs, &lrs, classes, device)?;
        let Some((group, steps, stopped)) = group.epoch(&train_set, &order, batch, loss, &heads, sinks)? else {
            // Every head was asked to stop during the epoch.
            for h in &heads {
                outcomes[h.index] = Some(Ok(TrainOutcome::Stopped { epoch }));
            }
            break;
        };
        let (valid_loss, valid_correct) = group.evaluate(&valid_set, loss, heads.len())?;
        let seconds = started.elapsed().as_secs_f64() / heads.len() as f64;
        let mut kept = Vec::with_capacity(heads.len());
        for (k, mut head) in heads.into_iter().enumerate() {
            let i = head.index;
            if stopped[k] {
                outcomes[i] = Some(Ok(TrainOutcome::Stopped { epoch }));
                continue;
            }
            let losses: Vec<f32> = steps.losses.iter().map(|row| row[k]).collect();
            if let Some(&bad) = losses.iter().find(|l| !l.is_finite()) {
                outcomes[i] = Some(Err(Error::NonFinite { epoch: epoch + 1, phase: "train", value: f64::from(bad) }));
                continue;
            }
            if !valid_loss[k].is_finite() {
                outcomes[i] = Some(Err(Error::NonFinite { epoch: epoch + 1, phase: "valid", value: valid_loss[k] }));
                continue;
            }
            group.store(k, configs[i].momentum != 0.0, &mut head.state)?;
            let loss_sum: f64 =
                losses.iter().zip(order.chunks(batch)).map(|(&loss, chunk)| f64::from(loss) * chunk.len() as f64).sum();
            let valid_acc = valid_correct[k] as f64 / split.valid.len() as f64;
            let is_best = valid_acc > head.state.best_valid_acc;
            head.state.epoch = epoch + 1;
            if is_best {
                head.state.best_valid_acc = valid_acc;
                head.state.best_epoch = epoch + 1;
            }
            let report = EpochReport {
                epoch: epoch + 1,
                train_loss: loss_sum / n_train as f64,
                train_acc: steps.correct[k] as f64 / n_train as f64,
                valid_loss: valid_loss[k],
                valid_acc,
                lr: lrs[k],
                seconds,
                is_best,
            };
            if let Err(e) = sinks[i].epoch(&report, &head.state) {
                outcomes[i] = Some(Err(Error::Sink(e)));
                continue;
            }
            kept.push(head);
        }
        heads = kept;
        epoch += 1;
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::State("a fused head ended without an outcome".to_owned()))))
        .collect())
}

/// What one epoch of the group measured: each step's loss of each head
/// (`[step][head]`), and each head's correct predictions.
struct Steps {
    losses: Vec<Vec<f32>>,
    correct: Vec<u32>,
}

/// The group's heads stacked: weights `[K·C, D]`, biases `[K·C]`, momentum
/// buffers (zeros for a head without momentum: `0 · buf + d = d`), and each
/// row's lr, momentum and weight decay.
struct Group {
    weight: Tensor,
    bias: Tensor,
    momentum: Option<(Tensor, Tensor)>,
    classes: usize,
    /// `[K·C, 1]` and `[K·C]`.
    lr: (Tensor, Tensor),
    mom: (Tensor, Tensor),
    decay: (Tensor, Tensor),
}

impl Group {
    fn new(
        heads: &[Head],
        configs: &[&super::TrainConfig],
        lrs: &[f64],
        classes: usize,
        device: &Device,
    ) -> Result<Group, Error> {
        let weights: Vec<&Tensor> = heads.iter().map(|h| &h.state.weight).collect();
        let biases: Vec<&Tensor> = heads.iter().map(|h| &h.state.bias).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = Tensor::cat(&biases, 0)?;
        // Heads at the same epoch: either none has taken a step yet, or every
        // one with momentum has its buffers.
        let momentum = if heads.iter().any(|h| h.state.momentum.is_some()) {
            let mut ws = Vec::with_capacity(heads.len());
            let mut bs = Vec::with_capacity(heads.len());
            for h in heads {
                match &h.state.momentum {
                    Some((w, b)) => {
                        ws.push(w.clone());
                        bs.push(b.clone());
                    }
                    None => {
                        ws.push(h.state.weight.zeros_like()?);
                        bs.push(h.state.bias.zeros_like()?);
                    }
                }
            }
            Some((Tensor::cat(&ws, 0)?, Tensor::cat(&bs, 0)?))
        } else {
            None
        };
        let per_row = |value: &dyn Fn(usize) -> f32| -> Result<(Tensor, Tensor), Error> {
            let rows: Vec<f32> = (0..heads.len()).flat_map(|k| std::iter::repeat_n(value(k), classes)).collect();
            let n = rows.len();
            let row = Tensor::from_vec(rows, n, device)?;
            Ok((row.reshape((n, 1))?, row))
        };
        Ok(Group {
            weight,
            bias,
            momentum,
            classes,
            lr: per_row(&|k| lrs[k] as f32)?,
            mom: per_row(&|k| configs[heads[k].index].momentum as f32)?,
            decay: per_row(&|k| configs[heads[k].index].weight_decay as f32)?,
        })
    }

    /// `torch.optim.SGD`'s step for every head's rows at once, as
    /// `train.rs`'s `Sgd::step` off the CPU: `d = g + wd · p`; `buf = d` on
    /// the first step, else `momentum · buf + d`; `p -= lr · buf`.
    fn step(
        param: Tensor,
        grad: &Tensor,
        buf: Option<Tensor>,
        (lr, mom, decay): (&Tensor, &Tensor, &Tensor),
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let d = (grad + param.broadcast_mul(decay)?)?;
        let buf = match buf {
            Some(buf) => (buf.broadcast_mul(mom)? + d)?,
            None => d,
        };
        let param = (param - buf.broadcast_mul(lr)?)?;
        Ok((param, buf))
    }

    /// One epoch of SGD over the samples in `order`. `None` when every
    /// head's sink asked to stop; otherwise the group after the epoch, what
    /// it measured, and which heads were asked to stop during it (their rows
    /// trained on, to be dropped).
    #[allow(clippy::type_complexity)]
    fn epoch(
        mut self,
        set: &Samples,
        order: &[u32],
        batch: usize,
        loss: Loss,
        heads: &[Head],
        sinks: &[&mut dyn EpochSink],
    ) -> Result<Option<(Group, Steps, Vec<bool>)>, Error> {
        let device = set.x.device();
        let k = heads.len();
        let order_t = Tensor::from_slice(order, order.len(), device)?;
        let mut losses = Vec::with_capacity(order.len().div_ceil(batch));
        let mut correct = Tensor::zeros(k, DType::U32, device)?;
        let mut stopped = vec![false; k];
        let (mut buf_w, mut buf_b) = match self.momentum.take() {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        };
        for start in (0..order.len()).step_by(batch) {
            for (s, h) in stopped.iter_mut().zip(heads) {
                *s = *s || sinks[h.index].should_stop();
            }
            if stopped.iter().all(|&s| s) {
                return Ok(None);
            }
            let idx = order_t.narrow(0, start, batch.min(order.len() - start))?;
            let xb = set.x.index_select(&idx, 0)?;
            let yb = set.y.index_select(&idx, 0)?;
            let onehot = set.onehot.index_select(&idx, 0)?;
            let logits = self.forward(&xb)?;
            let (value, grad) = loss_and_grad(loss, &logits, k, &yb, &onehot, true)?;
            let grad = grad.ok_or_else(|| Error::State("no gradient for the heads".to_owned()))?;
            losses.push(value);
            correct = (correct + count_correct(&logits, k, &yb)?)?;
            let grad_weight = grad.t()?.matmul(&xb)?;
            let grad_bias = grad.sum(0)?;
            let (w, bw) =
                Group::step(self.weight, &grad_weight, buf_w.take(), (&self.lr.0, &self.mom.0, &self.decay.0))?;
            let (b, bb) = Group::step(self.bias, &grad_bias, buf_b.take(), (&self.lr.1, &self.mom.1, &self.decay.1))?;
            (self.weight, self.bias) = (w, b);
            (buf_w, buf_b) = (Some(bw), Some(bb));
        }
        if let (Some(w), Some(b)) = (buf_w, buf_b) {
            self.momentum = Some((w, b));
        }
        let losses = if losses.is_empty() { Vec::new() } else { Tensor::stack(&losses, 0)?.to_vec2::<f32>()? };
        Ok(Some((self, Steps { losses, correct: correct.to_vec1()? }, stopped)))
    }

    /// `x · Wᵀ + b` for every head: `[B, K·C]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }

    /// Each head's mean loss and correct predictions over a set, in the
    /// chunks `train.rs`'s `evaluate` takes.
    fn evaluate(&self, set: &Samples, loss: Loss, k: usize) -> Result<(Vec<f64>, Vec<u64>), Error> {
        let n = set.x.dim(0)?;
        let (mut loss_sum, mut correct) = (vec![0f64; k], vec![0u64; k]);
        let chunk = 4096;
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let logits = self.forward(&set.x.narrow(0, start, len)?)?;
            let y = set.y.narrow(0, start, len)?;
            let (value, _) = loss_and_grad(loss, &logits, k, &y, &set.onehot.narrow(0, start, len)?, false)?;
            for (sum, v) in loss_sum.iter_mut().zip(value.to_vec1::<f32>()?) {
                *sum += f64::from(v) * len as f64;
            }
            for (c, v) in correct.iter_mut().zip(count_correct(&logits, k, &y)?.to_vec1::<u32>()?) {
                *c += u64::from(v);
            }
        }
        Ok((loss_sum.into_iter().map(|s| s / n as f64).collect(), correct))
    }

    /// Head `k`'s rows, copied into `state` (its momentum buffers only for a
    /// head with momentum, as the alone path keeps them). Copied into
    /// storage of their own: Candle's `copy` of a view copies the whole
    /// group's buffer, which made K heads hold K copies of it.
    fn store(&self, k: usize, momentum: bool, state: &mut TrainState) -> Result<(), Error> {
        let c = self.classes;
        let rows = |t: &Tensor| t.narrow(0, k * c, c)?.force_contiguous();
        state.weight = rows(&self.weight)?;
        state.bias = rows(&self.bias)?;
        if let (true, Some((w, b))) = (momentum, &self.momentum) {
            state.momentum = Some((rows(w)?, rows(b)?));
        }
        Ok(())
    }
}

/// Each head's batch loss (`[K]`, the mean over the batch) and, with
/// `grad`, the gradient with respect to the logits (`[B, K·C]`): `train.rs`'s
/// `loss_and_grad` on each head's `[B, C]` slice of `logits`.
fn loss_and_grad(
    loss: Loss,
    logits: &Tensor,
    k: usize,
    y: &Tensor,
    onehot: &Tensor,
    grad: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let (batch, kc) = logits.dims2()?;
    let classes = kc / k;
    let logits = logits.reshape((batch, k, classes))?;
    let onehot = onehot.unsqueeze(1)?; // [B, 1, C]
    let index = y.reshape((batch, 1, 1))?.broadcast_as((batch, k, 1))?.contiguous()?;
    let flat = |g: Tensor| g.reshape((batch, kc));
    match loss {
        Loss::CrossEntropy => {
            let shifted = logits.broadcast_sub(&logits.max_keepdim(2)?)?;
            let exp = shifted.exp()?;
            let sum = exp.sum_keepdim(2)?;
            let log_probs = shifted.broadcast_sub(&sum.log()?)?;
            let value = log_probs.gather(&index, 2)?.squeeze(2)?.neg()?.mean(0)?;
            let grad = if grad {
                Some(flat((exp.broadcast_div(&sum)?.broadcast_sub(&onehot)? / batch as f64)?)?)
            } else {
                None
            };
            Ok((value, grad))
        }
        Loss::MultiMargin => {
            let target = logits.gather(&index, 2)?;
            let margins = (logits.broadcast_sub(&target)? + 1.0)?;
            let others = (1.0 - &onehot)?;
            let value = (margins.relu()?.broadcast_mul(&others)?.sum(2)? / classes as f64)?.mean(0)?;
            let grad = if grad {
                let active = margins.gt(0f32)?.to_dtype(DType::F32)?.broadcast_mul(&others)?;
                let taken = onehot.broadcast_mul(&active.sum_keepdim(2)?)?;
                Some(flat(((active - taken)? / (batch * classes) as f64)?)?)
            } else {
                None
            };
            Ok((value, grad))
        }
    }
}

/// Each head's predictions equal to the labels (`[K]`, u32).
fn count_correct(logits: &Tensor, k: usize, y: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, kc) = logits.dims2()?;
    let predicted = logits.reshape((batch, k, kc / k))?.argmax(D::Minus1)?; // [B, K]
    predicted.broadcast_eq(&y.unsqueeze(1)?)?.to_dtype(DType::U32)?.sum(0)
}
