//! The head's three hot loops on x86-64 CPUs, by hand: the forward product
//! `x · W + b`, and the weight gradient `xᵀ · g` fused with the SGD step that
//! consumes it, on one thread.
//!
//! The weights live transposed and padded, `[D][CP]` with `CP` a multiple of
//! a register tile's width, so a row of weights is a few vector loads. Every
//! output element is one chain of fused multiply-adds in a fixed order (over
//! `D` for the forward product, over the batch for the gradient), whatever
//! the vector width: AVX-512 and AVX2 give the same bits (a test pins it).
//!
//! `unsafe` is confined here: raw pointers into slices whose bounds each
//! public function checks once, intrinsics behind run-time detection, and
//! the denormal mode an epoch runs in ([`FlushDenormals`]).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 16 lanes (AVX-512F).
    Avx512,
    /// 8 lanes (AVX2 and FMA).
    Avx2,
}

impl Isa {
    /// The best this CPU has, if any.
    pub(crate) fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Whether this CPU can run `self`.
    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The padded width of `classes` columns: a multiple of the column tile.
    pub(crate) fn padded(self, classes: usize) -> usize {
        // The lanes of a vector times the vectors of a register tile's row.
        let tile = match self {
            Isa::Avx512 => 16 * 4,
            Isa::Avx2 => 8 * 3,
        };
        classes.div_ceil(tile) * tile
    }
}

/// One SGD step's constants, torch's: `d = g + wd * p`; `buf = d` on the
/// first step (and always without momentum), else `momentum * buf + d`;
/// `p -= lr * buf`. Multiplies and adds are rounded separately, as torch's
/// (and Candle's) element-wise ops do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) lr: f32,
    pub(crate) momentum: f32,
    pub(crate) weight_decay: f32,
    /// No buffer yet: `buf = d`.
    pub(crate) first: bool,
}

impl Step {
    /// The step on one element, as the vector code computes it per lane.
    #[inline(always)]
    fn scalar(&self, p: &mut f32, buf: &mut f32, g: f32) {
        let d = if self.weight_decay != 0.0 { g + *p * self.weight_decay } else { g };
        *buf = if self.first { d } else { *buf * self.momentum + d };
        *p -= *buf * self.lr;
    }
}

/// The bias's gradient (the sum of `g` over the batch, in batch order) and
/// its step; `cp` columns.
pub(crate) fn bias_step(g: &[f32], rows: usize, cp: usize, bias: &mut [f32], buf: &mut [f32], step: Step) {
    assert!(g.len() >= rows * cp && bias.len() == cp && buf.len() == cp);
    for c in 0..cp {
        let mut sum = 0f32;
        for r in 0..rows {
            sum += g[r * cp + c];
        }
        step.scalar(&mut bias[c], &mut buf[c], sum);
    }
}

/// `out[r][c] = Σ_k x[r][k] · wt[k][c] + bias[c]` for every row `r` of `x`
/// (each `d` long) and every column `c < cp`; `out` is `[rows][cp]`.
pub(crate) fn forward(isa: Isa, x: &[&[f32]], wt: &[f32], bias: &[f32], cp: usize, out: &mut [f32]) {
    let d = wt.len() / cp;
    assert!(wt.len() == d * cp && bias.len() == cp && out.len() >= x.len() * cp);
    assert!(x.iter().all(|row| row.len() == d));
    assert!(isa.supported(), "{isa:?} is not supported by this CPU");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU supports `isa` (checked above), and the bounds are checked above.
    unsafe {
        match isa {
            Isa::Avx512 => forward_avx512(x, wt, bias, cp, d, out),
            Isa::Avx2 => forward_avx2(x, wt, bias, cp, d, out),
        }
    }
}

/// The weight gradient `gw[k][c] = Σ_r x[r][k] · g[r][c]` (in batch order),
/// each element consumed at once by the SGD step on `wt` and `buf` (`[D][cp]`).
pub(crate) fn grad_step(isa: Isa, x: &[&[f32]], g: &[f32], wt: &mut [f32], buf: &mut [f32], cp: usize, step: Step) {
    grad_step_forward(isa, x, g, wt, buf, cp, step, Next { x: &[], bias: &[], out: &mut [] });
}

/// The next batch's forward product, computed by [`grad_step_forward`] with
/// each tile of weights as soon as its step has written it.
pub(crate) struct Next<'a, 'b> {
    /// The next batch's rows.
    pub(crate) x: &'a [&'b [f32]],
    /// The bias after its own step (`[cp]`).
    pub(crate) bias: &'a [f32],
    /// `[rows][cp]`: `next.x · W + bias` with the stepped `W`, the same bits
    /// as [`forward`] gives once the step is done.
    pub(crate) out: &'a mut [f32],
}

/// [`grad_step`], and with the weights it writes, the forward product of
/// the next batch: the weights go through the cache once a step instead of
/// twice (the step is memory-bound: `W` and its buffer outgrow L2).
#[allow(clippy::too_many_arguments)]
pub(crate) fn grad_step_forward(
    isa: Isa,
    x: &[&[f32]],
    g: &[f32],
    wt: &mut [f32],
    buf: &mut [f32],
    cp: usize,
    step: Step,
    next: Next<'_, '_>,
) {
    let d = wt.len() / cp;
    assert!(wt.len() == d * cp && buf.len() == wt.len() && g.len() >= x.len() * cp);
    assert!(x.iter().chain(next.x).all(|row| row.len() == d));
    assert!(next.x.is_empty() || (next.bias.len() == cp && next.out.len() >= next.x.len() * cp));
    assert!(isa.supported(), "{isa:?} is not supported by this CPU");
    let out = &mut next.out[..next.x.len() * cp];
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `forward`.
    unsafe {
        match isa {
            Isa::Avx512 => grad_step_avx512(x, g, wt, buf, cp, d, step, next.x, out.as_mut_ptr()),
            Isa::Avx2 => grad_step_avx2(x, g, wt, buf, cp, d, step, next.x, out.as_mut_ptr()),
        }
    }
    add_bias(out, next.bias, cp);
}

/// While it lives, the CPU flushes denormal results to zero and reads
/// denormal inputs as zero (MXCSR's FTZ and DAZ), on this thread; the
/// previous mode comes back when it is dropped. Intel cores take a
/// microcode assist, over a hundred cycles, for each multiply-add that
/// meets a denormal (AMD's do not): a head whose gradients or momentum
/// buffers decay into them ran 6x slower there.
#[cfg(target_arch = "x86_64")]
pub(crate) struct FlushDenormals(u32);

#[cfg(target_arch = "x86_64")]
impl FlushDenormals {
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

    pub(crate) fn new() -> FlushDenormals {
        let mut old = 0u32;
        // SAFETY: reads and writes MXCSR only (SSE, in every x86-64 CPU);
        // the mode it sets changes no memory and breaks no invariant.
        unsafe {
            std::arch::asm!("stmxcsr [{0}]", in(reg) &mut old, options(nostack));
            let new = old | Self::FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{0}]", in(reg) &new, options(nostack, readonly));
        }
        FlushDenormals(old)
    }
}

/// Elsewhere: nothing to set.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) struct FlushDenormals;

#[cfg(not(target_arch = "x86_64"))]
impl FlushDenormals {
    pub(crate) fn new() -> FlushDenormals {
        FlushDenormals
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for FlushDenormals {
    fn drop(&mut self) {
        // SAFETY: as in `new`: the mode this thread had before.
        unsafe { std::arch::asm!("ldmxcsr [{0}]", in(reg) &self.0, options(nostack, readonly)) };
    }
}

/// The forward product's last step, `acc + bias`, lane by lane, for each
/// row of `out` (`cp` long).
fn add_bias(out: &mut [f32], bias: &[f32], cp: usize) {
    for row in out.chunks_exact_mut(cp) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// f32 operations a second this thread sustains with `isa`'s fused
/// multiply-adds over `rounds` rounds: 12 independent chains (more than two
/// units' worth of a multiply-add's latency, so the units, not the chains,
/// set the pace), nothing from memory. What a kernel could reach at best.
pub(crate) fn fma_rate(isa: Isa, rounds: u64) -> f64 {
    assert!(isa.supported(), "{isa:?} is not supported by this CPU");
    let start = std::time::Instant::now();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU supports `isa` (checked above); no memory is touched.
    let lanes = unsafe {
        match isa {
            Isa::Avx512 => fma_chains_avx512(rounds),
            Isa::Avx2 => fma_chains_avx2(rounds),
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes = 0;
    (rounds * FMA_CHAINS as u64 * lanes as u64 * 2) as f64 / start.elapsed().as_secs_f64()
}

#[cfg(target_arch = "x86_64")]
const FMA_CHAINS: usize = 12;

/// Runs the chains and returns the lanes of a vector.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fma_chains<V: Lanes>(rounds: u64) -> usize {
    let (a, b) = (V::splat(0.999), V::splat(1e-3));
    let mut acc: [V; FMA_CHAINS] = std::array::from_fn(|i| V::splat(i as f32));
    for _ in 0..rounds {
        for v in &mut acc {
            *v = V::fmadd(*v, a, b);
        }
    }
    std::hint::black_box(acc);
    V::N
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(rounds: u64) -> usize {
    fma_chains::<Avx512>(rounds)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(rounds: u64) -> usize {
    fma_chains::<Avx2>(rounds)
}

/// A SIMD register of `N` f32 lanes.
#[cfg(target_arch = "x86_64")]
trait Lanes: Copy {
    const N: usize;
    /// Rows of `x` in a register tile of the forward product.
    const ROWS: usize;
    /// Rows of `wt` in a register tile of the step: its accumulators stay
    /// live, as the stepped weights, through the next batch's products.
    const K_ROWS: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(x: f32) -> Self;
    /// `a · b + c`, rounded once.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512(__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    const N: usize = 16;
    // 6 × 4 accumulators of 32 registers; per step 4 loads and 6 broadcasts
    // feed 24 multiply-adds.
    const ROWS: usize = 6;
    // 4 × 4 weights, 4 sums, a broadcast and the step's 3 constants.
    const K_ROWS: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx512(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Avx512(_mm512_add_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        Avx512(_mm512_sub_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Avx512(_mm512_mul_ps(a.0, b.0))
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(__m256);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    const N: usize = 8;
    // 3 × 3 accumulators, 3 loads and a broadcast: 13 of 16 registers.
    const ROWS: usize = 3;
    // 3 × 3 weights, 3 sums, a broadcast and the step's 3 constants: 16 of
    // 16 registers. Nine independent sums per batch row hide the
    // multiply-add's latency (six, with 2 rows, left the FMA units half
    // idle), and each next-batch output is loaded and stored once per 3
    // rows of weights instead of 2: 1.5x the epoch on an AVX2 EPYC; 4 rows
    // spill.
    const K_ROWS: usize = 3;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx2(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Avx2(_mm256_add_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        Avx2(_mm256_sub_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Avx2(_mm256_mul_ps(a.0, b.0))
    }
}

/// Calls `$f::<V, R, C>` for `R` = `$rows` (1 to 6), the register tile's height.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $f:ident::<$v:ty, $c:ident>($($arg:expr),*)) => {
        match $rows {
            1 => $f::<$v, 1, $c>($($arg),*),
            2 => $f::<$v, 2, $c>($($arg),*),
            3 => $f::<$v, 3, $c>($($arg),*),
            4 => $f::<$v, 4, $c>($($arg),*),
            5 => $f::<$v, 5, $c>($($arg),*),
            6 => $f::<$v, 6, $c>($($arg),*),
            n => unreachable!("a register tile of {n} rows"),
        }
    };
}

/// Adds to `out` (`[x.len()][cp]`) the terms of `x · W` from rows `k0..k1`
/// of `wt`, in `k` order, for the `C` vectors of columns from `c0`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn accumulate_tile<V: Lanes, const R: usize, const C: usize>(
    x: &[&[f32]],
    wt: &[f32],
    cp: usize,
    (k0, k1): (usize, usize),
    c0: usize,
    out: *mut f32,
) {
    let at = |r: usize, j: usize| out.add(r * cp + c0 + j * V::N);
    let mut acc: [[V; C]; R] = std::array::from_fn(|r| std::array::from_fn(|j| V::load(at(r, j))));
    let rows: [*const f32; R] = std::array::from_fn(|r| x[r].as_ptr());
    let mut w = wt.as_ptr().add(k0 * cp + c0);
    for k in k0..k1 {
        let wv: [V; C] = std::array::from_fn(|j| V::load(w.add(j * V::N)));
        for r in 0..R {
            let xv = V::splat(*rows[r].add(k));
            for j in 0..C {
                acc[r][j] = V::fmadd(xv, wv[j], acc[r][j]);
            }
        }
        w = w.add(cp);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, a) in acc.iter().enumerate() {
            a.store(at(r, j));
        }
    }
}

/// Rows of `wt` a block of the forward product: every row of `x` goes
/// through a block while it is in L2 (120 classes: 60 KB), so the weights
/// come from L3 once a call, not once a register tile of rows.
const FORWARD_BLOCK: usize = 128;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn forward_with<V: Lanes, const C: usize>(
    x: &[&[f32]],
    wt: &[f32],
    bias: &[f32],
    cp: usize,
    d: usize,
    out: &mut [f32],
) {
    let tile = V::N * C;
    let out = &mut out[..x.len() * cp];
    // Each sum starts at zero, takes its terms in `k` order a block at a
    // time, and then the bias: the same chain as unblocked.
    out.fill(0.0);
    for k0 in (0..d).step_by(FORWARD_BLOCK) {
        let k1 = (k0 + FORWARD_BLOCK).min(d);
        for r0 in (0..x.len()).step_by(V::ROWS) {
            let rows = V::ROWS.min(x.len() - r0);
            let out = out.as_mut_ptr().add(r0 * cp);
            for c0 in (0..cp).step_by(tile) {
                by_rows!(rows, accumulate_tile::<V, C>(&x[r0..r0 + rows], wt, cp, (k0, k1), c0, out));
            }
        }
    }
    add_bias(out, bias, cp);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(x: &[&[f32]], wt: &[f32], bias: &[f32], cp: usize, d: usize, out: &mut [f32]) {
    forward_with::<Avx512, 4>(x, wt, bias, cp, d, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(x: &[&[f32]], wt: &[f32], bias: &[f32], cp: usize, d: usize, out: &mut [f32]) {
    forward_with::<Avx2, 3>(x, wt, bias, cp, d, out)
}

/// `R` rows of `wt` from `k0` by `C` vectors of columns from `c0`: their
/// gradient over the batch, then their step, then their terms of the next
/// batch's forward product, added to `out` (`[next.len()][cp]`) in `k` order.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_tile<V: Lanes, const R: usize, const C: usize>(
    x: &[&[f32]],
    g: &[f32],
    wt: *mut f32,
    buf: *mut f32,
    cp: usize,
    k0: usize,
    c0: usize,
    step: Step,
    next: &[&[f32]],
    out: *mut f32,
) {
    // The tile's weights and buffers come from L3 (together they outgrow
    // L2); asked for now, they arrive while the gradient is summed.
    for i in 0..R {
        let at = (k0 + i) * cp + c0;
        for line in (0..V::N * C).step_by(16) {
            _mm_prefetch::<_MM_HINT_T0>(wt.add(at + line) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(buf.add(at + line) as *const i8);
        }
    }
    let mut acc = [[V::zero(); C]; R];
    for (r, row) in x.iter().enumerate() {
        let gr = g.as_ptr().add(r * cp + c0);
        let gv: [V; C] = std::array::from_fn(|j| V::load(gr.add(j * V::N)));
        let xr = row.as_ptr().add(k0);
        for (i, acc) in acc.iter_mut().enumerate() {
            let xv = V::splat(*xr.add(i));
            for j in 0..C {
                acc[j] = V::fmadd(xv, gv[j], acc[j]);
            }
        }
    }
    let (lr, momentum, wd) = (V::splat(step.lr), V::splat(step.momentum), V::splat(step.weight_decay));
    for (i, acc) in acc.iter_mut().enumerate() {
        for (j, w) in acc.iter_mut().enumerate() {
            let grad = *w;
            let at = (k0 + i) * cp + c0 + j * V::N;
            let p = V::load(wt.add(at));
            let d = if step.weight_decay != 0.0 { V::add(grad, V::mul(p, wd)) } else { grad };
            let b = if step.first { d } else { V::add(V::mul(V::load(buf.add(at)), momentum), d) };
            b.store(buf.add(at));
            *w = V::sub(p, V::mul(b, lr));
            w.store(wt.add(at));
        }
    }
    // `acc` now holds the stepped weights.
    for (r, row) in next.iter().enumerate() {
        let o = out.add(r * cp + c0);
        let mut sums: [V; C] = std::array::from_fn(|j| V::load(o.add(j * V::N)));
        let xr = row.as_ptr().add(k0);
        for (i, w) in acc.iter().enumerate() {
            let xv = V::splat(*xr.add(i));
            for j in 0..C {
                sums[j] = V::fmadd(xv, w[j], sums[j]);
            }
        }
        for (j, s) in sums.iter().enumerate() {
            s.store(o.add(j * V::N));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_step_with<V: Lanes, const C: usize>(
    x: &[&[f32]],
    g: &[f32],
    wt: &mut [f32],
    buf: &mut [f32],
    cp: usize,
    d: usize,
    step: Step,
    next: &[&[f32]],
    out: *mut f32,
) {
    let tile = V::N * C;
    let (wt, buf) = (wt.as_mut_ptr(), buf.as_mut_ptr());
    for k0 in (0..d).step_by(V::K_ROWS) {
        let rows = V::K_ROWS.min(d - k0);
        for c0 in (0..cp).step_by(tile) {
            by_rows!(rows, grad_tile::<V, C>(x, g, wt, buf, cp, k0, c0, step, next, out));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_step_avx512(
    x: &[&[f32]],
    g: &[f32],
    wt: &mut [f32],
    buf: &mut [f32],
    cp: usize,
    d: usize,
    step: Step,
    next: &[&[f32]],
    out: *mut f32,
) {
    grad_step_with::<Avx512, 4>(x, g, wt, buf, cp, d, step, next, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_step_avx2(
    x: &[&[f32]],
    g: &[f32],
    wt: &mut [f32],
    buf: &mut [f32],
    cp: usize,
    d: usize,
    step: Step,
    next: &[&[f32]],
    out: *mut f32,
) {
    grad_step_with::<Avx2, 3>(x, g, wt, buf, cp, d, step, next, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic values in [-1, 1).
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The same chains of multiply-adds in plain Rust.
    fn forward_ref(x: &[&[f32]], wt: &[f32], bias: &[f32], cp: usize) -> Vec<f32> {
        let d = wt.len() / cp;
        let mut out = vec![0f32; x.len() * cp];
        for (r, row) in x.iter().enumerate() {
            for c in 0..cp {
                let mut acc = 0f32;
                for k in 0..d {
                    acc = row[k].mul_add(wt[k * cp + c], acc);
                }
                out[r * cp + c] = acc + bias[c];
            }
        }
        out
    }

    fn grad_step_ref(x: &[&[f32]], g: &[f32], wt: &mut [f32], buf: &mut [f32], cp: usize, step: Step) {
        let d = wt.len() / cp;
        for k in 0..d {
            for c in 0..cp {
                let mut acc = 0f32;
                for (r, row) in x.iter().enumerate() {
                    acc = row[k].mul_add(g[r * cp + c], acc);
                }
                step.scalar(&mut wt[k * cp + c], &mut buf[k * cp + c], acc);
            }
        }
    }

    #[test]
    fn kernels_equal_plain_chains_bit_for_bit_on_every_isa() {
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2].into_iter().filter(|i| i.supported()).collect();
        if isas.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2");
            return;
        }
        for (d, classes, batch) in [(37, 5, 1), (64, 120, 16), (50, 33, 7), (13, 200, 13), (300, 120, 20)] {
            for &isa in &isas {
                let cp = isa.padded(classes);
                let xs = data(batch * d, 1);
                let x: Vec<&[f32]> = xs.chunks(d).collect();
                let mut wt = data(d * cp, 2);
                let bias = data(cp, 3);
                let mut out = vec![f32::NAN; batch * cp];
                forward(isa, &x, &wt, &bias, cp, &mut out);
                assert_eq!(out, forward_ref(&x, &wt, &bias, cp), "{isa:?} forward, d {d}, {classes} classes");

                let g = data(batch * cp, 4);
                for step in [
                    Step { lr: 0.01, momentum: 0.9, weight_decay: 0.0, first: true },
                    Step { lr: 0.3, momentum: 0.5, weight_decay: 1e-3, first: false },
                ] {
                    let mut buf = data(d * cp, 5);
                    let (mut wt_ref, mut buf_ref) = (wt.clone(), buf.clone());
                    grad_step(isa, &x, &g, &mut wt, &mut buf, cp, step);
                    grad_step_ref(&x, &g, &mut wt_ref, &mut buf_ref, cp, step);
                    assert_eq!(wt, wt_ref, "{isa:?} weights, d {d}, {classes} classes");
                    assert_eq!(buf, buf_ref, "{isa:?} buffer, d {d}, {classes} classes");

                    // The same step with the next batch's forward product.
                    let next_rows = data((batch + 2) * d, 6);
                    let next: Vec<&[f32]> = next_rows.chunks(d).collect();
                    let (mut wt_f, mut buf_f) = (wt_ref.clone(), buf_ref.clone());
                    grad_step_ref(&x, &g, &mut wt_ref, &mut buf_ref, cp, step);
                    let mut out = vec![f32::NAN; next.len() * cp];
                    let next_bias = data(cp, 7);
                    let next_step = Next { x: &next, bias: &next_bias, out: &mut out };
                    grad_step_forward(isa, &x, &g, &mut wt_f, &mut buf_f, cp, step, next_step);
                    assert_eq!(wt_f, wt_ref, "{isa:?} fused weights, d {d}, {classes} classes");
                    assert_eq!(buf_f, buf_ref, "{isa:?} fused buffer, d {d}, {classes} classes");
                    assert_eq!(out, forward_ref(&next, &wt_ref, &next_bias, cp), "{isa:?} fused forward");
                    (wt, buf) = (wt_f, buf_f);
                }
            }
        }
    }
}
