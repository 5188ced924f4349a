//! The bf16 backbone on the CPU: each convolution (the stem's included) as
//! one matrix product on Intel AMX tiles (`tdpbf16ps`: bf16 inputs, f32 sums),
//! its patches gathered a block of rows at a time into the product, and the
//! bias + residual + ReLU applied to each 32x32 block of the output as it
//! leaves the tile registers.
//!
//! Numerics: the activations and the folded weights are rounded to bf16
//! (round to nearest even) as they enter a product; every sum, the bias,
//! the residual stream and the features stay f32.
//!
//! `unsafe` is confined here: the AMX instructions (inline assembly: Rust
//! has no stable AMX intrinsics), AVX-512 conversions behind run-time
//! detection, the one system call that asks Linux for the tile state, and
//! raw pointers into slices whose bounds [`conv`] checks once.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Storage, Tensor};

/// Rows and columns of the output block one kernel call computes: two
/// 16-row tiles of the patches by two 16-column tiles of the weights.
const BLOCK: usize = 32;
/// Bytes of one tile row: 32 bf16 (16 pairs of the inner dimension).
const TILE_ROW: usize = 64;

/// Whether this CPU and OS can run the bf16 backbone (checked once): AMX
/// tiles with bf16 (Intel Sapphire Rapids and later), AVX-512 BF16 for the
/// conversions, and Linux's permission to use the tile state.
pub(crate) fn available() -> bool {
    unavailable().is_none()
}

/// Why [`available`] is not, in words. `SWEEP_NO_AMX` (set, not empty)
/// turns the tiles off: bf16 then computes in f32, as on a CPU without them.
pub(crate) fn unavailable() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *WHY.get_or_init(detect)
}

const NO_TILES: &str = "this CPU has no AMX bf16 tiles (Intel Sapphire Rapids and later)";

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> Option<&'static str> {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    if std::env::var_os("SWEEP_NO_AMX").is_some_and(|v| !v.is_empty()) {
        return Some("SWEEP_NO_AMX is set");
    }
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("xsave"))
    {
        return Some(NO_TILES);
    }
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return Some(NO_TILES);
    }
    // The OS saves the tile configuration and data (XCR0 bits 17 and 18).
    // SAFETY: `xsave` is detected above, and with it XGETBV.
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 & (0b11 << 17) != 0b11 << 17 || !request_tile_data() {
        return Some("Linux does not let this process use the AMX tiles (it needs Linux 5.16 or later)");
    }
    None
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> Option<&'static str> {
    Some(NO_TILES)
}

/// Linux (5.16 and later) gives a process the tile data state only when it
/// asks: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once, for
/// every thread of the process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a system call that only changes which CPU state the kernel
    // lets this process use; it reads and writes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// A folded convolution's weight `[K, N]` in bf16, in the layout the tiles
/// read: a panel of 32 columns after another, each `[K/2][32][2]` (pairs
/// of the inner dimension side by side), so that a panel is contiguous and
/// a tile's rows are 128 bytes apart. `K` is padded with zero rows to a
/// multiple of 32.
pub(crate) struct PackedWeights {
    data: Vec<u16>,
    /// The inner dimension, and it padded to whole tiles.
    k: usize,
    k_padded: usize,
    n: usize,
}

impl PackedWeights {
    /// Packs `weight` (`[k, n]`, row-major), or `None` when `n` is not a
    /// multiple of 32 (every ResNet convolution's is).
    pub(crate) fn new(weight: &[f32], k: usize, n: usize) -> Option<PackedWeights> {
        if !n.is_multiple_of(BLOCK) || weight.len() != k * n {
            return None;
        }
        let k_padded = k.next_multiple_of(BLOCK);
        let mut data = vec![0u16; k_padded * n];
        for (row, w) in weight.chunks_exact(n).enumerate() {
            for (col, &v) in w.iter().enumerate() {
                let (panel, c) = (col / BLOCK, col % BLOCK);
                data[panel * k_padded * BLOCK + (row / 2) * BLOCK * 2 + c * 2 + row % 2] =
                    half::bf16::from_f32(v).to_bits();
            }
        }
        Some(PackedWeights { data, k, k_padded, n })
    }

    /// The panel of columns `n0..n0 + 32`.
    fn panel(&self, n0: usize) -> *const u16 {
        self.data[n0 * self.k_padded..].as_ptr()
    }
}

/// A convolution's geometry: kernel size, stride, zero padding.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
}

/// The input activations, channels-last.
#[derive(Clone, Copy)]
enum Src<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// `relu(conv(xs) + bias [+ residual])` on channels-last `[B, H, W, C]`
/// activations (f32 or bf16), `residual` f32 of the output's shape. The
/// output is bf16 when `bf16_out` (for a convolution whose output only
/// feeds another), else f32. Needs [`available`].
pub(crate) fn conv(
    xs: &Tensor,
    weights: &PackedWeights,
    bias: &[f32],
    geometry: Geometry,
    residual: Option<&Tensor>,
    relu: bool,
    bf16_out: bool,
) -> candle_core::Result<Tensor> {
    if let Some(why) = unavailable() {
        candle_core::bail!("bf16 convolution: {why}");
    }
    let (b, h, w, c) = xs.dims4()?;
    let Geometry { k, stride, pad } = geometry;
    let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let (m, n) = (b * ho * wo, weights.n);
    if k * k * c != weights.k || bias.len() != n {
        candle_core::bail!("bf16 convolution: weights [{}, {}] for a {k}x{k} kernel on {c} channels", weights.k, n);
    }
    let (storage, layout) = xs.storage_and_layout();
    let src = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((s, e))) => Src::F32(&v[s..e]),
        (Storage::Cpu(CpuStorage::BF16(v)), Some((s, e))) => Src::Bf16(bf16_bits(&v[s..e])),
        _ => candle_core::bail!("bf16 convolution: needs contiguous f32 or bf16 activations on the CPU"),
    };
    let res_guard = residual.map(|r| r.storage_and_layout());
    let residual = match &res_guard {
        None => None,
        Some((storage, layout)) => match (&**storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((s, e))) if e - s == m * n => Some(&v[s..e]),
            _ => candle_core::bail!("bf16 convolution: needs a contiguous f32 residual of {m} x {n}"),
        },
    };
    let job = Job { src, h, w, c, ho, wo, m, geometry, weights, bias, residual, relu };
    let threads = candle_core::utils::get_num_threads().clamp(1, m.div_ceil(BLOCK).max(1));
    // Whole blocks of rows to each thread.
    let per_thread = m.div_ceil(BLOCK).div_ceil(threads) * BLOCK;
    let device = xs.device().clone();
    let shape = (b, ho, wo, n);
    let compute = |out: Out<'_>, per_row: usize| {
        std::thread::scope(|scope| {
            for (t, chunk) in out.split(per_thread * per_row).into_iter().enumerate() {
                let job = &job;
                scope.spawn(move || job.rows(t * per_thread, chunk));
            }
        })
    };
    let ys = if bf16_out {
        let mut out = uninit::<half::bf16>(m * n);
        // SAFETY: `half::bf16` is `repr(transparent)` over `u16`.
        let bits = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<u16>>(), out.len()) };
        compute(Out::Bf16(bits), n);
        // SAFETY: `finish` wrote every row and column.
        Tensor::from_vec(unsafe { assume_init(out) }, shape, &device)
    } else {
        let mut out = uninit::<f32>(m * n);
        compute(Out::F32(&mut out), n);
        // SAFETY: `finish` wrote every row and column.
        Tensor::from_vec(unsafe { assume_init(out) }, shape, &device)
    };
    drop((storage, res_guard));
    ys
}

/// `len` values not yet written.
fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// # Safety
/// Every value of `v` written.
unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; the values are written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

fn bf16_bits(v: &[half::bf16]) -> &[u16] {
    // SAFETY: `half::bf16` is `repr(transparent)` over `u16`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), v.len()) }
}

/// A run of one row of patches.
#[derive(Clone, Copy)]
enum Values<'a> {
    Zero(usize),
    Bf16(&'a [u16]),
    F32(&'a [f32]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::Zero(n) => *n,
            Values::Bf16(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }
}

/// Where a thread writes its rows of the output (written once each, by
/// [`Job::finish`]).
enum Out<'a> {
    F32(&'a mut [MaybeUninit<f32>]),
    Bf16(&'a mut [MaybeUninit<u16>]),
}

impl<'a> Out<'a> {
    fn len(&self) -> usize {
        match self {
            Out::F32(v) => v.len(),
            Out::Bf16(v) => v.len(),
        }
    }

    /// In parts of `size` values.
    fn split(self, size: usize) -> Vec<Out<'a>> {
        match self {
            Out::F32(v) => v.chunks_mut(size).map(Out::F32).collect(),
            Out::Bf16(v) => v.chunks_mut(size).map(Out::Bf16).collect(),
        }
    }
}

/// One convolution, shared by the threads that compute its rows.
struct Job<'a> {
    src: Src<'a>,
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
    /// Output rows (`B·Ho·Wo`).
    m: usize,
    geometry: Geometry,
    weights: &'a PackedWeights,
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// A tile configuration: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut config = TileConfig([0; 64]);
        config.0[0] = 1;
        for tile in 0..8 {
            // Bytes a row (u16 at 16 + 2t), then rows (u8 at 48 + t).
            config.0[16 + 2 * tile] = TILE_ROW as u8;
            config.0[48 + tile] = 16;
        }
        config
    }
}

/// 32x32 f32 sums, as the tiles store them.
#[repr(C, align(64))]
struct Sums([f32; BLOCK * BLOCK]);

impl Job<'_> {
    /// Output rows `first..` (as many as `out` holds), on this thread.
    fn rows(&self, first: usize, out: Out<'_>) {
        // SAFETY: `conv` runs only where `available()`: AMX-BF16, AVX-512F
        // and AVX-512 BF16 on the CPU, and the tile state granted.
        unsafe { self.rows_amx(first, out) }
    }

    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    unsafe fn rows_amx(&self, first: usize, mut out: Out<'_>) {
        let n = self.weights.n;
        let steps = self.weights.k_padded / BLOCK;
        let rows = out.len() / n;
        // A chunk of rows of patches, gathered once and kept in L2 while
        // every panel of the weights passes over it.
        let chunk = ((512 << 10) / (self.weights.k_padded * 2)).clamp(BLOCK, 512) / BLOCK * BLOCK;
        let mut patches = vec![0u16; chunk.min(rows.next_multiple_of(BLOCK)) * self.weights.k_padded];
        let mut sums = Sums([0.0; BLOCK * BLOCK]);
        let config = TileConfig::new();
        // SAFETY: a valid palette-1 configuration of 8 tiles.
        std::arch::asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let padded = len.next_multiple_of(BLOCK);
            let row0 = first + start;
            let patches = &mut patches[..padded * self.weights.k_padded];
            self.gather(row0, len, patches);
            for n0 in (0..n).step_by(BLOCK) {
                let panel = self.weights.panel(n0);
                for (r, a) in (0..padded).step_by(BLOCK).zip(patches.chunks_exact(BLOCK * self.weights.k_padded)) {
                    let valid = BLOCK.min(len - r);
                    // The residual's and the output's lines of the block are
                    // fetched while the tiles compute it.
                    self.prefetch(row0 + r, start + r, valid, n0, &out);
                    // SAFETY: `a` is 32 rows of patches packed as `gather`
                    // packs them, `panel` 32 columns of weights, both
                    // `steps` tiles deep.
                    block(a.as_ptr(), panel, steps, &mut sums);
                    self.finish(&sums, row0 + r, start + r, valid, n0, &mut out);
                }
            }
            start += len;
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }

    /// The patches of output rows `row0..row0 + len` (rows in `(ky, kx, c)`
    /// order, zero where the kernel overhangs the image and past `K`), in
    /// bf16, packed for the tiles: for each block of 32 rows, for each 32 of
    /// the inner dimension, `[32 rows][32]`. The rows past `len`, up to the
    /// block's 32, are zero.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    unsafe fn gather(&self, row0: usize, len: usize, dst: &mut [u16]) {
        let Geometry { k, stride, pad } = self.geometry;
        let (c, k_padded) = (self.c, self.weights.k_padded);
        debug_assert!(row0 + len <= self.m && dst.len() == len.next_multiple_of(BLOCK) * k_padded);
        // Where element `col` of row `i` goes.
        let at = |i: usize, col: usize| ((i / BLOCK) * k_padded + col - col % BLOCK + i % BLOCK) * BLOCK + col % BLOCK;
        for i in 0..len.next_multiple_of(BLOCK) {
            if i >= len {
                for col in (0..k_padded).step_by(BLOCK) {
                    dst[at(i, col)..at(i, col) + BLOCK].fill(0);
                }
                continue;
            }
            let r = row0 + i;
            let (bi, oy, ox) = (r / (self.ho * self.wo), (r / self.wo) % self.ho, r % self.wo);
            // The row's values in order, a piece of up to 32 at a time.
            let mut col = 0;
            let mut put = |values: Values<'_>, col: &mut usize| {
                let mut done = 0;
                while done < values.len() {
                    let take = (BLOCK - *col % BLOCK).min(values.len() - done);
                    let d = &mut dst[at(i, *col)..at(i, *col) + take];
                    piece(values, done, d);
                    done += take;
                    *col += take;
                }
            };
            for ky in 0..k {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                if iy >= self.h {
                    put(Values::Zero(k * c), &mut col);
                    continue;
                }
                // The kernel's row: the pixels `ix` it covers are side by
                // side in the image as in the patch, but where it overhangs.
                let first = (ox * stride).wrapping_sub(pad);
                let (lo, hi) = (pad.saturating_sub(ox * stride), (self.w + pad).saturating_sub(ox * stride).min(k));
                put(Values::Zero(lo * c), &mut col);
                if lo < hi {
                    let s = ((bi * self.h + iy) * self.w + first.wrapping_add(lo)) * c;
                    match self.src {
                        Src::Bf16(src) => put(Values::Bf16(&src[s..s + (hi - lo) * c]), &mut col),
                        Src::F32(src) => put(Values::F32(&src[s..s + (hi - lo) * c]), &mut col),
                    }
                }
                put(Values::Zero((k - hi.max(lo)) * c), &mut col);
            }
            put(Values::Zero(k_padded - col), &mut col);
        }
    }

    /// Asks for the cache lines [`Job::finish`] reads (the residual) and
    /// writes (the output) for the block at rows `row`.. (`local`.. of
    /// `out`), columns `n0..n0 + 32`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    unsafe fn prefetch(&self, row: usize, local: usize, valid: usize, n0: usize, out: &Out<'_>) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        let n = self.weights.n;
        for i in 0..valid {
            if let Some(res) = self.residual {
                let line = res[(row + i) * n + n0..].as_ptr().cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(line);
                _mm_prefetch::<_MM_HINT_T0>(line.add(64));
            }
            match out {
                Out::F32(o) => {
                    let line = o[(local + i) * n + n0..].as_ptr().cast::<i8>();
                    _mm_prefetch::<_MM_HINT_ET0>(line);
                    _mm_prefetch::<_MM_HINT_ET0>(line.add(64));
                }
                Out::Bf16(o) => _mm_prefetch::<_MM_HINT_ET0>(o[(local + i) * n + n0..].as_ptr().cast::<i8>()),
            }
        }
    }

    /// Bias, residual and ReLU on `valid` rows of a block of sums (output
    /// rows `row`.., the thread's rows `local`..), columns `n0..n0 + 32`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
    unsafe fn finish(&self, sums: &Sums, row: usize, local: usize, valid: usize, n0: usize, out: &mut Out<'_>) {
        use std::arch::x86_64::*;
        let n = self.weights.n;
        let zero = _mm512_setzero_ps();
        for i in 0..valid {
            for half in 0..2 {
                let col = n0 + 16 * half;
                let mut v = _mm512_loadu_ps(sums.0[i * BLOCK + 16 * half..].as_ptr());
                v = _mm512_add_ps(v, _mm512_loadu_ps(self.bias[col..col + 16].as_ptr()));
                if let Some(res) = self.residual {
                    let at = (row + i) * n + col;
                    v = _mm512_add_ps(v, _mm512_loadu_ps(res[at..at + 16].as_ptr()));
                }
                if self.relu {
                    v = _mm512_max_ps(v, zero);
                }
                let at = (local + i) * n + col;
                match out {
                    Out::F32(o) => _mm512_storeu_ps(o[at..at + 16].as_mut_ptr().cast(), v),
                    Out::Bf16(o) => {
                        let packed: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                        _mm256_storeu_si256(o[at..at + 16].as_mut_ptr().cast(), packed);
                    }
                }
            }
        }
    }
}

/// Values `from..from + dst.len()` (at most 32) of `values` into `dst`, in
/// bf16 (f32 rounded to nearest even), with masked vector loads and stores.
#[target_feature(enable = "avx512f,avx512bf16,avx512vl,avx512bw")]
unsafe fn piece(values: Values<'_>, from: usize, dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    debug_assert!(n <= BLOCK && from + n <= values.len());
    let mask = |n: usize| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    let d = dst.as_mut_ptr();
    match values {
        Values::Zero(_) => _mm512_mask_storeu_epi16(d.cast(), mask(n), _mm512_setzero_si512()),
        Values::Bf16(v) => {
            let m = mask(n);
            _mm512_mask_storeu_epi16(d.cast(), m, _mm512_maskz_loadu_epi16(m, v[from..].as_ptr().cast()));
        }
        Values::F32(v) => {
            for half in 0..n.div_ceil(16) {
                let count = (n - 16 * half).min(16);
                let m = mask(count) as u16;
                let x = _mm512_maskz_loadu_ps(m, v[from + 16 * half..].as_ptr());
                let packed: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
                _mm256_mask_storeu_epi16(d.add(16 * half).cast(), m, packed);
            }
        }
    }
}

/// One 32x32 block of sums: 32 rows of patches (`a`, packed as
/// [`Job::gather`] packs them) times a panel of 32 columns of weights (`b`,
/// as [`PackedWeights`] packs them), over `steps` × 32 of the inner dimension.
///
/// # Safety
/// AMX configured as [`TileConfig`] on this thread; `a` and `b` readable
/// for `steps` × 2048 bytes.
#[inline(always)]
unsafe fn block(a: *const u16, b: *const u16, steps: usize, sums: &mut Sums) {
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        "tileloadd tmm4, [{a} + {s64}*1]",
        "tileloadd tmm6, [{b} + {s128}*1]",
        "tileloadd tmm7, [{b} + {s128}*1 + 64]",
        "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 2048",
        "add {b}, 2048",
        "dec {steps}",
        "jnz 2b",
        "tilestored [{c} + {s128}*1], tmm0",
        "tilestored [{c} + {s128}*1 + 64], tmm1",
        "tilestored [{c} + {s128}*1 + 2048], tmm2",
        "tilestored [{c} + {s128}*1 + 2112], tmm3",
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        s64 = in(reg) 64usize,
        s128 = in(reg) 128usize,
        steps = inout(reg) steps => _,
        c = in(reg) sums.0.as_mut_ptr(),
        options(nostack),
    );
}

/// bf16 multiply-add operations (2 a multiply-add) a core's tiles do a
/// second, measured: `tdpbf16ps` on four independent accumulators (no
/// memory), for about `seconds`. `None` where [`available`] is not.
pub(crate) fn tile_flops(seconds: f64) -> Option<f64> {
    if !available() {
        return None;
    }
    let ones = [half::bf16::ONE.to_bits(); 16 * BLOCK];
    let rate = |rounds: usize| {
        let config = TileConfig::new();
        let start = std::time::Instant::now();
        // SAFETY: `available()`: AMX is usable; a valid configuration; the
        // four tiles loaded from `ones`, 16 rows of 64 bytes.
        unsafe {
            std::arch::asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tileloadd tmm4, [{p} + {s}*1]",
                "tileloadd tmm5, [{p} + {s}*1]",
                "tileloadd tmm6, [{p} + {s}*1]",
                "tileloadd tmm7, [{p} + {s}*1]",
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "dec {n}",
                "jnz 2b",
                "tilerelease",
                p = in(reg) ones.as_ptr(),
                s = in(reg) TILE_ROW,
                n = inout(reg) rounds.max(1) => _,
                options(nostack, readonly),
            );
        }
        // Each round: 4 products of 16 x 16 outputs, 32 deep.
        (rounds * 4 * 16 * 16 * 32 * 2) as f64 / start.elapsed().as_secs_f64().max(1e-9)
    };
    let calibration = 20_000;
    let first = rate(calibration);
    Some(rate(((first * seconds) / (4.0 * 16.0 * 16.0 * 32.0 * 2.0)) as usize).max(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The same convolution in plain f32 arithmetic on bf16-rounded inputs.
    fn reference(
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
        weight: &[f32],
        n: usize,
        g: Geometry,
    ) -> Vec<f32> {
        let round = |v: f32| half::bf16::from_f32(v).to_f32();
        let Geometry { k, stride, pad } = g;
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        let mut out = vec![0f32; b * ho * wo * n];
        for bi in 0..b {
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = (bi * ho + oy) * wo + ox;
                    for j in 0..n {
                        let mut s = 0f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy * stride + ky).wrapping_sub(pad), (ox * stride + kx).wrapping_sub(pad));
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                for ci in 0..c {
                                    let xv = round(x[((bi * h + iy) * w + ix) * c + ci]);
                                    let wv = round(weight[((ky * k + kx) * c + ci) * n + j]);
                                    s += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[row * n + j] = s as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn amx_convolutions_equal_plain_arithmetic_on_bf16_inputs() -> candle_core::Result<()> {
        if !available() {
            eprintln!("skipped: {} (the bf16 backbone computes in f32 here)", unavailable().unwrap_or_default());
            return Ok(());
        }
        // Odd row counts (partial blocks), strides, padding, both input and
        // output dtypes, with and without residual and ReLU.
        // The stem's shape too: 3 channels, K = 147 padded to 160.
        for (b, h, w, c, n, k, stride) in [
            (1, 5, 7, 32, 32, 3, 1),
            (2, 9, 6, 64, 96, 3, 2),
            (3, 11, 13, 32, 64, 1, 1),
            (2, 8, 8, 64, 32, 1, 2),
            (2, 13, 9, 3, 64, 7, 2),
        ] {
            let g = Geometry { k, stride, pad: k / 2 };
            let (ho, wo) = ((h + 2 * g.pad - k) / stride + 1, (w + 2 * g.pad - k) / stride + 1);
            let x = Tensor::randn(0f32, 1f32, (b, h, w, c), &Device::Cpu)?;
            let weight: Vec<f32> = Tensor::randn(0f32, 0.1f32, (k * k * c * n,), &Device::Cpu)?.to_vec1()?;
            let bias: Vec<f32> = (0..n).map(|j| j as f32 / n as f32 - 0.5).collect();
            let residual = Tensor::randn(0f32, 1f32, (b, ho, wo, n), &Device::Cpu)?;
            let packed = PackedWeights::new(&weight, k * k * c, n).expect("whole tiles");
            let plain = reference(&x.flatten_all()?.to_vec1()?, (b, h, w, c), &weight, n, g);
            let res: Vec<f32> = residual.flatten_all()?.to_vec1()?;
            for (input_bf16, with_res, relu, out_bf16) in [
                (false, false, true, false),
                (true, true, true, false),
                (false, true, false, true),
                (true, false, false, true),
            ] {
                let xs = if input_bf16 { x.to_dtype(candle_core::DType::BF16)? } else { x.clone() };
                let ys = conv(&xs, &packed, &bias, g, with_res.then_some(&residual), relu, out_bf16)?;
                assert_eq!(ys.dims(), &[b, ho, wo, n]);
                let got: Vec<f32> = ys.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
                for (i, (&got, &sum)) in got.iter().zip(&plain).enumerate() {
                    let mut want = sum + bias[i % n] + if with_res { res[i] } else { 0.0 };
                    if relu {
                        want = want.max(0.0);
                    }
                    if out_bf16 {
                        want = half::bf16::from_f32(want).to_f32();
                    }
                    // f32 sums in another order; bf16 output: one rounding.
                    let tol = if out_bf16 { 1e-2 * want.abs() + 1e-4 } else { 1e-5 * (1.0 + want.abs()) };
                    assert!((got - want).abs() <= tol, "{b}x{h}x{w}x{c} k{k} s{stride} at {i}: {got} vs {want}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_inner_dimension_is_padded_and_the_columns_must_be_whole_tiles() {
        assert!(PackedWeights::new(&[0.0; 32 * 48], 32, 48).is_none());
        let packed = PackedWeights::new(&[1.0; 147 * 64], 147, 64).expect("the stem's shape");
        assert_eq!((packed.k, packed.k_padded, packed.n), (147, 160, 64));
        // The padding rows are zero: each panel holds 147 ones.
        for panel in packed.data.chunks_exact(160 * 32) {
            assert_eq!(panel.iter().filter(|&&v| v == half::bf16::ONE.to_bits()).count(), 147 * 32);
        }
    }
}
