//! The head's epoch on the CPU, on one thread, with the kernels of
//! [`super::kernel`]: the same SGD, losses and metrics as the Candle path,
//! without its per-op thread pool, temporaries and gathers.
//!
//! A head epoch is small products (`[16, 2048] × [2048, 120]`): Candle spreads
//! each over its threads and allocates every intermediate, which costs more
//! than the arithmetic. Here a job reads its rows in place from the feature
//! matrix, keeps its weights transposed and padded for the kernels, computes
//! each batch's logits within the step before it (with the weights as that
//! step writes them), and allocates nothing per batch; a sweep runs one job
//! per core instead. BENCHMARKS.md has the figures.

use candle_core::{Device, Tensor};

use super::kernel::{self, Isa, Step};
use super::{EpochSink, EpochSteps, Loss, TrainConfig, TrainState};
use crate::Error;

/// A head in the kernels' layout.
pub(super) struct CpuHead {
    isa: Isa,
    dim: usize,
    classes: usize,
    /// `classes` padded to the kernels' tile.
    cp: usize,
    /// `[dim][cp]`: the weight transposed, zero in the padding.
    wt: Vec<f32>,
    /// `[cp]`.
    bias: Vec<f32>,
    /// Momentum buffers, in the same layouts.
    buf_w: Vec<f32>,
    buf_b: Vec<f32>,
    /// Whether the buffers hold a step (torch's `momentum_buffer` exists).
    has_buf: bool,
}

impl CpuHead {
    /// The head of `state` (`weight` `[classes, dim]`).
    pub(super) fn from_state(isa: Isa, state: &TrainState) -> Result<CpuHead, Error> {
        let (classes, dim) = state.weight.dims2()?;
        let cp = isa.padded(classes);
        let transpose = |t: &Tensor| -> Result<Vec<f32>, Error> {
            let w: Vec<f32> = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            let mut wt = vec![0f32; dim * cp];
            for (c, row) in w.chunks_exact(dim).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    wt[k * cp + c] = v;
                }
            }
            Ok(wt)
        };
        let pad = |t: &Tensor| -> Result<Vec<f32>, Error> {
            let mut v: Vec<f32> = t.to_device(&Device::Cpu)?.to_vec1()?;
            v.resize(cp, 0.0);
            Ok(v)
        };
        let (buf_w, buf_b, has_buf) = match &state.momentum {
            Some((w, b)) => (transpose(w)?, pad(b)?, true),
            None => (vec![0f32; dim * cp], vec![0f32; cp], false),
        };
        Ok(CpuHead {
            isa,
            dim,
            classes,
            cp,
            wt: transpose(&state.weight)?,
            bias: pad(&state.bias)?,
            buf_w,
            buf_b,
            has_buf,
        })
    }

    /// Writes the head back into `state`, in Candle's layout.
    pub(super) fn store(&self, state: &mut TrainState) -> Result<(), Error> {
        let (dim, classes, cp) = (self.dim, self.classes, self.cp);
        let untranspose = |wt: &[f32]| -> Result<Tensor, Error> {
            let mut w = vec![0f32; classes * dim];
            // 16 rows of `wt` at a time: a cache line of each row of `w`
            // written whole (its rows are `dim` floats apart: with 2048, one
            // set of L1 lines for every class, one element at a time).
            for k0 in (0..dim).step_by(16) {
                let rows = &wt[k0 * cp..(k0 + 16).min(dim) * cp];
                for c in 0..classes {
                    for (k, row) in rows.chunks_exact(cp).enumerate() {
                        w[c * dim + k0 + k] = row[c];
                    }
                }
            }
            Ok(Tensor::from_vec(w, (classes, dim), &Device::Cpu)?)
        };
        let unpad = |b: &[f32]| Tensor::from_slice(&b[..classes], classes, &Device::Cpu);
        state.weight = untranspose(&self.wt)?;
        state.bias = unpad(&self.bias)?;
        state.momentum = if self.has_buf { Some((untranspose(&self.buf_w)?, unpad(&self.buf_b)?)) } else { None };
        Ok(())
    }
}

/// The rows of a feature matrix, in place.
pub(super) struct Rows<'a> {
    pub(super) data: &'a [f32],
    pub(super) dim: usize,
}

impl<'a> Rows<'a> {
    fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The rows and labels of `batch` (positions in `train`) into `rows`, `ys`.
fn gather<'a>(
    x: &Rows<'a>,
    labels: &[u32],
    train: &[usize],
    batch: &[u32],
    rows: &mut Vec<&'a [f32]>,
    ys: &mut Vec<u32>,
) {
    rows.clear();
    ys.clear();
    for &pos in batch {
        let i = train[pos as usize];
        rows.push(x.row(i));
        ys.push(labels[i]);
    }
}

/// The rows of f16 features (`feature_dtype = "f16"`): each batch's rows
/// are converted to f32 into a buffer of the batch's size as they are
/// gathered, so the whole matrix is never held as f32.
pub(super) struct HalfRows<'a> {
    pub(super) data: &'a [half::f16],
    pub(super) dim: usize,
}

impl HalfRows<'_> {
    /// The rows `idx` (sample indices), converted, into `buf`.
    fn convert(&self, idx: impl Iterator<Item = usize>, buf: &mut Vec<f32>) {
        buf.clear();
        for i in idx {
            buf.extend(self.data[i * self.dim..(i + 1) * self.dim].iter().map(|x| x.to_f32()));
        }
    }
}

/// [`sgd_epoch`] on f16 rows: the same steps, in the same order, on each
/// batch's rows converted to f32 (two batch buffers, as the next batch's
/// product is computed within the step before it).
#[allow(clippy::too_many_arguments)]
pub(super) fn sgd_epoch_half(
    head: &mut CpuHead,
    x: &HalfRows<'_>,
    labels: &[u32],
    train: &[usize],
    order: &[u32],
    cfg: &TrainConfig,
    lr: f64,
    sink: &dyn EpochSink,
) -> Result<Option<EpochSteps>, Error> {
    let _flush = kernel::FlushDenormals::new();
    let (cp, bs, dim) = (head.cp, cfg.batch_size, x.dim);
    let mut logits = vec![0f32; bs * cp];
    let mut grad = vec![0f32; bs * cp];
    let mut bufs = [Vec::with_capacity(bs * dim), Vec::with_capacity(bs * dim)];
    let mut ys: [Vec<u32>; 2] = [Vec::with_capacity(bs), Vec::with_capacity(bs)];
    let fill = |batch: &[u32], buf: &mut Vec<f32>, ys: &mut Vec<u32>| {
        x.convert(batch.iter().map(|&pos| train[pos as usize]), buf);
        ys.clear();
        ys.extend(batch.iter().map(|&pos| labels[train[pos as usize]]));
    };
    let batches: Vec<&[u32]> = order.chunks(bs).collect();
    let mut losses = Vec::with_capacity(batches.len());
    let mut correct = 0u64;
    if let Some(first) = batches.first() {
        fill(first, &mut bufs[0], &mut ys[0]);
        let rows: Vec<&[f32]> = bufs[0].chunks_exact(dim).collect();
        kernel::forward(head.isa, &rows, &head.wt, &head.bias, cp, &mut logits);
    }
    for k in 0..batches.len() {
        if sink.should_stop() {
            return Ok(None);
        }
        let cur = k % 2;
        let (loss, right) = loss_and_grad(cfg.loss, &logits, &ys[cur], head.classes, cp, Some(&mut grad));
        losses.push(loss as f32);
        correct += right;
        let step = Step {
            lr: lr as f32,
            momentum: cfg.momentum as f32,
            weight_decay: cfg.weight_decay as f32,
            first: !head.has_buf || cfg.momentum == 0.0,
        };
        kernel::bias_step(&grad, batches[k].len(), cp, &mut head.bias, &mut head.buf_b, step);
        if let Some(upcoming) = batches.get(k + 1) {
            let [b0, b1] = &mut bufs;
            let [y0, y1] = &mut ys;
            let (cur_buf, next_buf, next_ys) = if cur == 0 { (&*b0, b1, y1) } else { (&*b1, b0, y0) };
            fill(upcoming, next_buf, next_ys);
            let rows: Vec<&[f32]> = cur_buf.chunks_exact(dim).collect();
            let next_rows: Vec<&[f32]> = next_buf.chunks_exact(dim).collect();
            let following = kernel::Next { x: &next_rows, bias: &head.bias, out: &mut logits };
            kernel::grad_step_forward(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step, following);
        } else {
            let rows: Vec<&[f32]> = bufs[cur].chunks_exact(dim).collect();
            kernel::grad_step(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step);
        }
        if cfg.momentum != 0.0 {
            head.has_buf = true;
        }
    }
    Ok(Some(EpochSteps { losses, correct }))
}

/// [`evaluate`] on f16 rows, converted a chunk at a time.
pub(super) fn evaluate_half(head: &CpuHead, x: &HalfRows<'_>, labels: &[u32], set: &[usize], loss: Loss) -> (f64, u64) {
    let _flush = kernel::FlushDenormals::new();
    const CHUNK: usize = 256;
    let cp = head.cp;
    let mut logits = vec![0f32; CHUNK * cp];
    let mut buf = Vec::with_capacity(CHUNK * x.dim);
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    for chunk in set.chunks(CHUNK) {
        x.convert(chunk.iter().copied(), &mut buf);
        let rows: Vec<&[f32]> = buf.chunks_exact(x.dim).collect();
        let ys: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
        kernel::forward(head.isa, &rows, &head.wt, &head.bias, cp, &mut logits);
        let (value, right) = loss_and_grad(loss, &logits, &ys, head.classes, cp, None);
        loss_sum += value * chunk.len() as f64;
        correct += right;
    }
    (loss_sum / set.len() as f64, correct)
}

/// One epoch of SGD over `train` (sample indices) in `order` (positions in
/// `train`); `None` when the sink asked to stop.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgd_epoch<'a>(
    head: &mut CpuHead,
    x: &Rows<'a>,
    labels: &[u32],
    train: &[usize],
    order: &[u32],
    cfg: &TrainConfig,
    lr: f64,
    sink: &dyn EpochSink,
) -> Result<Option<EpochSteps>, Error> {
    let _flush = kernel::FlushDenormals::new();
    let (cp, bs) = (head.cp, cfg.batch_size);
    let mut logits = vec![0f32; bs * cp];
    let mut grad = vec![0f32; bs * cp];
    let (mut rows, mut next_rows): (Vec<&[f32]>, Vec<&[f32]>) = (Vec::with_capacity(bs), Vec::with_capacity(bs));
    let (mut ys, mut next_ys): (Vec<u32>, Vec<u32>) = (Vec::with_capacity(bs), Vec::with_capacity(bs));
    let gather =
        |batch: &[u32], rows: &mut Vec<&'a [f32]>, ys: &mut Vec<u32>| gather(x, labels, train, batch, rows, ys);
    let mut losses = Vec::with_capacity(order.len().div_ceil(bs));
    let mut correct = 0u64;
    let mut batches = order.chunks(bs).peekable();
    // Each step's forward product is computed by the step before it, with
    // the weights as that step writes them; the first one here.
    if let Some(first) = batches.peek() {
        gather(first, &mut rows, &mut ys);
        kernel::forward(head.isa, &rows, &head.wt, &head.bias, cp, &mut logits);
    }
    while batches.next().is_some() {
        if sink.should_stop() {
            return Ok(None);
        }
        let (loss, right) = loss_and_grad(cfg.loss, &logits, &ys, head.classes, cp, Some(&mut grad));
        losses.push(loss as f32);
        correct += right;
        let step = Step {
            lr: lr as f32,
            momentum: cfg.momentum as f32,
            weight_decay: cfg.weight_decay as f32,
            first: !head.has_buf || cfg.momentum == 0.0,
        };
        kernel::bias_step(&grad, rows.len(), cp, &mut head.bias, &mut head.buf_b, step);
        match batches.peek() {
            Some(next) => {
                gather(next, &mut next_rows, &mut next_ys);
                let next = kernel::Next { x: &next_rows, bias: &head.bias, out: &mut logits };
                kernel::grad_step_forward(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step, next);
                std::mem::swap(&mut rows, &mut next_rows);
                std::mem::swap(&mut ys, &mut next_ys);
            }
            None => kernel::grad_step(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step),
        }
        if cfg.momentum != 0.0 {
            head.has_buf = true;
        }
    }
    Ok(Some(EpochSteps { losses, correct }))
}

/// One epoch of `heads` in lockstep over the same batches, each with its
/// own learning rate: every batch gathered once, then each head's step and
/// its next product in turn: "fused heads", as a GPU would run them in one
/// product. Only the benchmark uses it (BENCHMARKS.md: on a CPU it costs a
/// trial what training alone does, since each head's weights still go
/// through the cache once a step). Returns each head's summed loss.
pub(super) fn lockstep_epoch<'a>(
    heads: &mut [CpuHead],
    lrs: &[f32],
    x: &Rows<'a>,
    labels: &[u32],
    train: &[usize],
    order: &[u32],
    cfg: &TrainConfig,
) -> Vec<f64> {
    let _flush = kernel::FlushDenormals::new();
    let bs = cfg.batch_size;
    let cp = heads.first().map_or(0, |h| h.cp);
    let mut logits = vec![vec![0f32; bs * cp]; heads.len()];
    let mut grad = vec![0f32; bs * cp];
    let mut sums = vec![0f64; heads.len()];
    let (mut rows, mut next_rows): (Vec<&[f32]>, Vec<&[f32]>) = (Vec::new(), Vec::new());
    let (mut ys, mut next_ys): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let gather =
        |batch: &[u32], rows: &mut Vec<&'a [f32]>, ys: &mut Vec<u32>| gather(x, labels, train, batch, rows, ys);
    let mut batches = order.chunks(bs).peekable();
    if let Some(first) = batches.peek() {
        gather(first, &mut rows, &mut ys);
        for (head, logits) in heads.iter().zip(&mut logits) {
            kernel::forward(head.isa, &rows, &head.wt, &head.bias, cp, logits);
        }
    }
    while batches.next().is_some() {
        let next = batches.peek().copied();
        if let Some(next) = next {
            gather(next, &mut next_rows, &mut next_ys);
        }
        for (((head, logits), &lr), sum) in heads.iter_mut().zip(&mut logits).zip(lrs).zip(&mut sums) {
            let (loss, _) = loss_and_grad(cfg.loss, logits, &ys, head.classes, cp, Some(&mut grad));
            *sum += loss;
            let step = Step {
                lr,
                momentum: cfg.momentum as f32,
                weight_decay: cfg.weight_decay as f32,
                first: !head.has_buf || cfg.momentum == 0.0,
            };
            kernel::bias_step(&grad, rows.len(), cp, &mut head.bias, &mut head.buf_b, step);
            match next {
                Some(_) => {
                    let next = kernel::Next { x: &next_rows, bias: &head.bias, out: logits };
                    kernel::grad_step_forward(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step, next);
                }
                None => kernel::grad_step(head.isa, &rows, &grad, &mut head.wt, &mut head.buf_w, cp, step),
            }
            head.has_buf |= cfg.momentum != 0.0;
        }
        std::mem::swap(&mut rows, &mut next_rows);
        std::mem::swap(&mut ys, &mut next_ys);
    }
    sums
}

/// Mean loss and number correct over `set` (sample indices), without gradients.
pub(super) fn evaluate(head: &CpuHead, x: &Rows<'_>, labels: &[u32], set: &[usize], loss: Loss) -> (f64, u64) {
    let _flush = kernel::FlushDenormals::new();
    const CHUNK: usize = 256;
    let cp = head.cp;
    let mut logits = vec![0f32; CHUNK * cp];
    let (mut loss_sum, mut correct) = (0f64, 0u64);
    for chunk in set.chunks(CHUNK) {
        let rows: Vec<&[f32]> = chunk.iter().map(|&i| x.row(i)).collect();
        let ys: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
        kernel::forward(head.isa, &rows, &head.wt, &head.bias, cp, &mut logits);
        let (value, right) = loss_and_grad(loss, &logits, &ys, head.classes, cp, None);
        loss_sum += value * chunk.len() as f64;
        correct += right;
    }
    (loss_sum / set.len() as f64, correct)
}

/// A batch's mean loss and correct predictions from its `logits` (`[B][cp]`,
/// the first `classes` columns real) and, with `grad`, the loss's gradient
/// with respect to the logits (`[B][cp]`, zero in the padding), as the Candle
/// path writes it out.
fn loss_and_grad(
    loss: Loss,
    logits: &[f32],
    ys: &[u32],
    classes: usize,
    cp: usize,
    mut grad: Option<&mut [f32]>,
) -> (f64, u64) {
    let batch = ys.len();
    let (mut sum, mut correct) = (0f64, 0u64);
    for (r, &y) in ys.iter().enumerate() {
        let y = y as usize;
        let l = &logits[r * cp..r * cp + classes];
        let mut best = 0;
        for c in 1..classes {
            if l[c] > l[best] {
                best = c;
            }
        }
        correct += u64::from(best == y);
        let g = grad.as_deref_mut().map(|g| &mut g[r * cp..(r + 1) * cp]);
        match loss {
            Loss::CrossEntropy => {
                // log_softmax as torch computes it: (x - max) - log(sum(exp(x - max))).
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                match g {
                    Some(g) => {
                        let g = &mut g[..classes];
                        for (gc, &v) in g.iter_mut().zip(l) {
                            *gc = (v - max).exp();
                        }
                        let exp_sum: f32 = g.iter().sum();
                        sum -= f64::from((l[y] - max) - exp_sum.ln());
                        // d mean(-log_softmax(x)[y]) / dx = (softmax(x) - onehot(y)) / B.
                        for (c, gc) in g.iter_mut().enumerate() {
                            *gc = (*gc / exp_sum - f32::from(c == y)) / batch as f32;
                        }
                    }
                    None => {
                        let exp_sum: f32 = l.iter().map(|&v| (v - max).exp()).sum();
                        sum -= f64::from((l[y] - max) - exp_sum.ln());
                    }
                }
            }
            Loss::MultiMargin => {
                // sum over j != y of max(0, 1 - x[y] + x[j]), divided by the class count.
                let target = l[y];
                let mut row = 0f32;
                let mut active = 0f32;
                let scale = (batch * classes) as f32;
                let mut g = g;
                for (c, &v) in l.iter().enumerate() {
                    let margin = v - target + 1.0;
                    let on = c != y && margin > 0.0;
                    if c != y {
                        row += margin.max(0.0);
                    }
                    active += f32::from(on);
                    if let Some(g) = g.as_deref_mut() {
                        g[c] = f32::from(on) / scale;
                    }
                }
                if let Some(g) = g {
                    g[y] = -active / scale;
                }
                sum += f64::from(row / classes as f32);
            }
        }
    }
    (sum / batch as f64, correct)
}
