//! The backbone's convolutions on an x86 CPU with AVX-512: each (the stem's
//! included) as one matrix product of its patches and its folded weights,
//! and the bias + residual + ReLU applied to each 32x32 block of the output
//! as it leaves the registers.
//!
//! In f32 ([`f32_available`]): AVX-512F multiply-adds that read the patches
//! where they are, in the activations (implicit im2col: a step of the inner
//! dimension is 32 channels of one pixel; the stem's 3 channels, and inputs
//! in the other dtype, are gathered first). In bf16 (`dtype = "bf16"`), the
//! best kernel the CPU has ([`Kernel`]): Intel's AMX tiles
//! (`tdpbf16ps`), or AVX-512 BF16's dot products (`vdpbf16ps`: AMD Zen 4
//! and later, Intel Cooper Lake). In bf16 the activations and the folded
//! weights are rounded to bf16 (round to nearest even) as they enter a
//! product; every sum, the bias, the residual stream and the features stay
//! f32. The dot products read bf16 activations in place as f32 does; the
//! tiles gather the patches a block of rows at a time into their layout.
//!
//! `unsafe` is confined here: the AMX instructions (inline assembly: Rust
//! has no stable AMX intrinsics), AVX-512 intrinsics behind run-time
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

/// What computes the products of a bf16 pass on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles (Sapphire Rapids and later): `tdpbf16ps`, a 16x16
    /// block 32 deep an instruction.
    Amx,
    /// AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and later):
    /// `vdpbf16ps`, 16 sums of pairs an instruction, twice f32's FMAs.
    Avx512Bf16,
}

impl Kernel {
    /// In words, for messages and `sweep bench`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX tiles",
            Kernel::Avx512Bf16 => "AVX-512 BF16 dot products",
        }
    }
}

/// The kernel a bf16 pass uses here (chosen once): the AMX tiles where the
/// CPU and Linux allow them, else AVX-512 BF16, else none (why, in words).
/// `SWEEP_CPU_BF16` caps the choice: `amx`, `avx512` (never the tiles), or
/// `off` (bf16 computes in f32, as on a CPU without either).
pub(crate) fn kernel() -> Result<Kernel, &'static str> {
    static KERNEL: std::sync::OnceLock<Result<Kernel, &'static str>> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let choice = std::env::var("SWEEP_CPU_BF16").unwrap_or_default();
        let kernel = detect(&choice);
        match kernel {
            Ok(k) => tracing::debug!(kernel = k.name(), "the bf16 backbone's products"),
            Err(why) => tracing::debug!(why, "no bf16 kernel"),
        }
        kernel
    })
}

/// Whether this CPU and OS can run the bf16 backbone.
pub(crate) fn available() -> bool {
    kernel().is_ok()
}

/// Why [`available`] is not, in words.
pub(crate) fn unavailable() -> Option<&'static str> {
    kernel().err()
}

const NO_TILES: &str = "this CPU has no AMX bf16 tiles (Intel Sapphire Rapids and later)";
const NO_BF16: &str =
    "this CPU has no AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and later) and no AMX bf16 tiles";

/// The kernel for `SWEEP_CPU_BF16`'s value `choice` (empty: the best).
fn detect(choice: &str) -> Result<Kernel, &'static str> {
    let (tiles, dots) = match choice {
        "" => (true, true),
        "amx" => (true, false),
        "avx512" => (false, true),
        "off" => return Err("SWEEP_CPU_BF16 is off"),
        _ => return Err("SWEEP_CPU_BF16 is none of amx, avx512 and off"),
    };
    if !avx512_bf16() {
        return Err(if tiles && !dots { NO_TILES } else { NO_BF16 });
    }
    if tiles {
        match amx_tiles() {
            None => return Ok(Kernel::Amx),
            Some(why) if !dots => return Err(why),
            Some(_) => {}
        }
    }
    Ok(Kernel::Avx512Bf16)
}

/// AVX-512 with BF16 (and the BW and VL parts the gather uses).
fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Why the AMX tiles cannot be used here, or `None` when they can.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_tiles() -> Option<&'static str> {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    if !std::arch::is_x86_feature_detected!("xsave") {
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
fn amx_tiles() -> Option<&'static str> {
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

/// A folded convolution's weight `[K, N]`, in the layout the kernels read:
/// a panel of 32 columns after another, each contiguous. In bf16, a panel
/// is `[K/2][32][2]` (pairs of the inner dimension side by side, as the
/// tiles and `vdpbf16ps` read them: a tile's rows 128 bytes apart); in f32,
/// `[K][32]`. `K` is padded with zero rows to a multiple of 32.
pub(crate) struct PackedWeights {
    data: Panels,
    /// The inner dimension, and it padded to whole tiles.
    k: usize,
    k_padded: usize,
    n: usize,
}

enum Panels {
    Bf16(Vec<u16>),
    F32(Vec<f32>),
}

impl PackedWeights {
    /// Packs `weight` (`[k, n]`, row-major) in bf16, or `None` when `n` is
    /// not a multiple of 32 (every ResNet convolution's is).
    pub(crate) fn new(weight: &[f32], k: usize, n: usize) -> Option<PackedWeights> {
        let k_padded = k.next_multiple_of(BLOCK);
        let mut data = vec![0u16; k_padded * n];
        PackedWeights::each(weight, k, n, |row, col, v| {
            let (panel, c) = (col / BLOCK, col % BLOCK);
            data[panel * k_padded * BLOCK + (row / 2) * BLOCK * 2 + c * 2 + row % 2] =
                half::bf16::from_f32(v).to_bits();
        })?;
        Some(PackedWeights { data: Panels::Bf16(data), k, k_padded, n })
    }

    /// Packs `weight` in f32 (for [`f32_available`]'s kernel), or `None`
    /// as [`PackedWeights::new`].
    pub(crate) fn f32(weight: &[f32], k: usize, n: usize) -> Option<PackedWeights> {
        let k_padded = k.next_multiple_of(BLOCK);
        let mut data = vec![0f32; k_padded * n];
        PackedWeights::each(weight, k, n, |row, col, v| {
            let (panel, c) = (col / BLOCK, col % BLOCK);
            data[panel * k_padded * BLOCK + row * BLOCK + c] = v;
        })?;
        Some(PackedWeights { data: Panels::F32(data), k, k_padded, n })
    }

    /// `put(row, col, value)` for each value of `weight`, when its shape
    /// is whole panels.
    fn each(weight: &[f32], k: usize, n: usize, mut put: impl FnMut(usize, usize, f32)) -> Option<()> {
        if !n.is_multiple_of(BLOCK) || weight.len() != k * n {
            return None;
        }
        for (row, w) in weight.chunks_exact(n).enumerate() {
            for (col, &v) in w.iter().enumerate() {
                put(row, col, v);
            }
        }
        Some(())
    }

    /// Whether it is in bf16 (else f32).
    pub(crate) fn is_bf16(&self) -> bool {
        matches!(self.data, Panels::Bf16(_))
    }

    /// Where the panel of columns `n0..n0 + 32` starts, in values.
    fn panel(&self, n0: usize) -> usize {
        n0 * self.k_padded
    }
}

/// Whether [`conv`] runs f32 convolutions on this CPU (AVX-512F, BW and
/// VL: Intel Skylake-SP and later, AMD Zen 4 and later).
/// `SWEEP_CPU_F32=candle` leaves them to Candle's matrix product.
pub(crate) fn f32_available() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        let off = std::env::var("SWEEP_CPU_F32").is_ok_and(|v| v == "candle");
        !off && avx512()
    })
}

/// AVX-512F with the BW and VL parts the gather and the epilogue use.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
/// feeds another), else f32. The product is in the weights' dtype: bf16
/// needs [`available`], f32 [`f32_available`].
pub(crate) fn conv(
    xs: &Tensor,
    weights: &PackedWeights,
    bias: &[f32],
    geometry: Geometry,
    residual: Option<&Tensor>,
    relu: bool,
    bf16_out: bool,
) -> candle_core::Result<Tensor> {
    let kernel = match weights.data {
        Panels::Bf16(_) => Some(kernel().map_err(|why| candle_core::Error::Msg(format!("bf16 convolution: {why}")))?),
        Panels::F32(_) if f32_available() => None,
        Panels::F32(_) => candle_core::bail!("f32 convolution: this CPU has no AVX-512"),
    };
    let epilogue = Epilogue { residual, relu, bf16_out };
    conv_on(kernel, xs, weights, bias, geometry, epilogue)
}

/// What follows a convolution's product: the residual added, ReLU, and
/// the output's dtype.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    residual: Option<&'a Tensor>,
    relu: bool,
    bf16_out: bool,
}

/// [`conv`] on `kernel` (bf16 weights; `None` for f32 ones), which the
/// caller knows this CPU runs.
fn conv_on(
    kernel: Option<Kernel>,
    xs: &Tensor,
    weights: &PackedWeights,
    bias: &[f32],
    geometry: Geometry,
    Epilogue { residual, relu, bf16_out }: Epilogue<'_>,
) -> candle_core::Result<Tensor> {
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
    let job = Job { kernel, src, h, w, c, ho, wo, m, geometry, weights, bias, residual, relu };
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

/// Where [`piece`] writes.
enum PatchesMut<'a> {
    Bf16(&'a mut [u16]),
    F32(&'a mut [f32]),
}

impl PatchesMut<'_> {
    fn len(&self) -> usize {
        match self {
            PatchesMut::Bf16(v) => v.len(),
            PatchesMut::F32(v) => v.len(),
        }
    }

    /// Values `at..at + len`.
    fn range(&mut self, at: usize, len: usize) -> PatchesMut<'_> {
        match self {
            PatchesMut::Bf16(v) => PatchesMut::Bf16(&mut v[at..at + len]),
            PatchesMut::F32(v) => PatchesMut::F32(&mut v[at..at + len]),
        }
    }
}

/// One convolution, shared by the threads that compute its rows.
struct Job<'a> {
    /// The bf16 kernel (`None`: f32 weights, on AVX-512F).
    kernel: Option<Kernel>,
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
        // SAFETY: `conv` runs only where AVX-512F, BW and VL are, and bf16
        // weights only on a kernel `kernel()` found: AVX-512 BF16 too, and
        // for `Amx` the tiles and their state granted.
        unsafe {
            match (&self.weights.data, self.kernel) {
                (Panels::F32(weights), _) => self.rows_pointed::<f32>(weights, first, out),
                (Panels::Bf16(weights), Some(Kernel::Avx512Bf16)) => self.rows_pointed::<u16>(weights, first, out),
                (Panels::Bf16(weights), _) => self.rows_on(weights, first, out),
            }
        }
    }

    /// [`Job::rows`] on the AMX tiles: for each chunk of rows, their
    /// patches gathered once into the tiles' layout and kept in L2 while
    /// every panel of the weights passes over them.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw")]
    unsafe fn rows_on(&self, weights: &[u16], first: usize, mut out: Out<'_>) {
        let (n, k_padded) = (self.weights.n, self.weights.k_padded);
        let steps = k_padded / BLOCK;
        let rows = out.len() / n;
        let chunk = chunk_rows(k_padded * 2);
        let mut patches = vec![0u16; chunk.min(rows.next_multiple_of(BLOCK)) * k_padded];
        let mut sums = Sums([0.0; BLOCK * BLOCK]);
        debug_assert_eq!(self.kernel, Some(Kernel::Amx));
        let config = TileConfig::new();
        // SAFETY: a valid palette-1 configuration of 8 tiles.
        std::arch::asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let padded = len.next_multiple_of(BLOCK);
            let row0 = first + start;
            self.gather(row0, len, PatchesMut::Bf16(&mut patches[..padded * k_padded]));
            for n0 in (0..n).step_by(BLOCK) {
                let panel = weights[self.weights.panel(n0)..].as_ptr();
                for r in (0..padded).step_by(BLOCK) {
                    let valid = BLOCK.min(len - r);
                    // The residual's and the output's lines of the block are
                    // fetched while the kernel computes it.
                    self.prefetch(row0 + r, start + r, valid, n0, &out);
                    let a = patches[r * k_padded..].as_ptr();
                    // SAFETY: `a` is 32 rows of patches packed as `gather`
                    // packs them, `panel` 32 columns of weights, both
                    // `steps` × 32 deep; the tiles configured above.
                    block(a, panel, steps, &mut sums);
                    self.finish(&sums, row0 + r, start + r, valid, n0, &mut out);
                }
            }
            start += len;
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }

    /// [`Job::rows`] on f32 weights ([`block_f32`]) or on AVX-512 BF16
    /// ([`block_dots`]): each block of rows as a table of pointers, one for
    /// each row and step of the inner dimension, to that row's 32 values of
    /// the step. Where the activations are in the weights' dtype and the
    /// channels whole steps (every convolution of a ResNet but its stem,
    /// and in bf16 but those reading the f32 residual stream), a step is 32
    /// channels of one pixel, so the pointers point into the activations
    /// themselves (into zeros where the kernel overhangs the image) and the
    /// patches are never copied; else into patches gathered as for the
    /// tiles.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw")]
    unsafe fn rows_pointed<T: Element>(&self, weights: &[T], first: usize, mut out: Out<'_>) {
        let (n, k_padded) = (self.weights.n, self.weights.k_padded);
        let steps = k_padded / BLOCK;
        let rows = out.len() / n;
        let direct = T::values(self.src).filter(|_| self.c.is_multiple_of(BLOCK));
        let chunk = chunk_rows(k_padded * size_of::<T>());
        let blocks = chunk.min(rows.next_multiple_of(BLOCK)) / BLOCK;
        let mut patches = vec![T::default(); if direct.is_some() { 0 } else { blocks * BLOCK * k_padded }];
        let zeros = vec![T::default(); if direct.is_some() { self.c } else { 0 }];
        let mut at = vec![[std::ptr::null::<T>(); DOT_ROWS]; blocks * BLOCK / DOT_ROWS * steps];
        let mut sums = Sums([0.0; BLOCK * BLOCK]);
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let padded = len.next_multiple_of(BLOCK);
            let row0 = first + start;
            match direct {
                Some(src) => self.point(src, &zeros, row0, len, &mut at),
                None => {
                    let patches = &mut patches[..padded * k_padded];
                    self.gather(row0, len, T::patches(patches));
                    point_packed(patches, steps, &mut at);
                }
            }
            // Each block of rows through every panel before the next: the
            // block's rows of the output (and of the residual) are written
            // (read) whole before the next block's (measured: 5-10% faster
            // on the expanding 1x1 convolutions than panel by panel).
            for r in (0..padded).step_by(BLOCK) {
                let valid = BLOCK.min(len - r);
                let groups = &at[r / DOT_ROWS * steps..][..valid.div_ceil(DOT_ROWS) * steps];
                for n0 in (0..n).step_by(BLOCK) {
                    let panel = weights[self.weights.panel(n0)..].as_ptr();
                    // The residual's and the output's lines of the block are
                    // fetched while the kernel computes it.
                    self.prefetch(row0 + r, start + r, valid, n0, &out);
                    // SAFETY: every pointer of `groups` is to 32 values of
                    // `src`, `zeros` or `patches`, all alive here; `panel`
                    // is 32 columns `steps` × 32 deep; AVX-512 BF16 for
                    // bf16 weights (`rows`).
                    T::block(groups, panel, steps, &mut sums);
                    self.finish(&sums, row0 + r, start + r, valid, n0, &mut out);
                }
            }
            start += len;
        }
    }

    /// Fills `at` (for each group of 8 rows, for each step, the group's 8
    /// pointers) for output rows `row0..row0 + len`, the rows past `len` up
    /// to a whole block at zeros: step `(ky · k + kx) · C / 32 + j` of a row
    /// is channels `32j..32j + 32` of the pixel under kernel position
    /// `(ky, kx)`, as the weights order the inner dimension.
    fn point<T>(&self, src: &[T], zeros: &[T], row0: usize, len: usize, at: &mut [[*const T; DOT_ROWS]]) {
        let Geometry { k, stride, pad } = self.geometry;
        let (c, per_pixel) = (self.c, self.c / BLOCK);
        let steps = k * k * per_pixel;
        for i in 0..len.next_multiple_of(BLOCK) {
            let (group, lane) = (i / DOT_ROWS, i % DOT_ROWS);
            let at = &mut at[group * steps..][..steps];
            let r = row0 + i;
            let (bi, oy, ox) = (r / (self.ho * self.wo), (r / self.wo) % self.ho, r % self.wo);
            for ky in 0..k {
                let iy = (oy * stride + ky).wrapping_sub(pad);
                for kx in 0..k {
                    let ix = (ox * stride + kx).wrapping_sub(pad);
                    let pixel = if i < len && iy < self.h && ix < self.w {
                        &src[((bi * self.h + iy) * self.w + ix) * c..][..c]
                    } else {
                        zeros
                    };
                    let first = (ky * k + kx) * per_pixel;
                    for (j, values) in pixel.chunks_exact(BLOCK).enumerate() {
                        at[first + j][lane] = values.as_ptr();
                    }
                }
            }
        }
    }

    /// The patches of output rows `row0..row0 + len` (rows in `(ky, kx, c)`
    /// order, zero where the kernel overhangs the image and past `K`), in
    /// bf16, packed for the tiles: for each block of 32 rows, for each 32 of
    /// the inner dimension, `[32 rows][32]`. The rows past `len`, up to the
    /// block's 32, are zero.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw")]
    unsafe fn gather(&self, row0: usize, len: usize, mut dst: PatchesMut<'_>) {
        let Geometry { k, stride, pad } = self.geometry;
        let (c, k_padded) = (self.c, self.weights.k_padded);
        debug_assert!(row0 + len <= self.m && dst.len() == len.next_multiple_of(BLOCK) * k_padded);
        // Where element `col` of row `i` goes.
        let at = |i: usize, col: usize| ((i / BLOCK) * k_padded + col - col % BLOCK + i % BLOCK) * BLOCK + col % BLOCK;
        for i in 0..len.next_multiple_of(BLOCK) {
            if i >= len {
                for col in (0..k_padded).step_by(BLOCK) {
                    piece(Values::Zero(BLOCK), 0, dst.range(at(i, col), BLOCK));
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
                    piece(values, done, dst.range(at(i, *col), take));
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
    #[target_feature(enable = "avx512f,avx512vl,avx512bw")]
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
    #[target_feature(enable = "avx512f,avx512vl,avx512bw")]
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
                    Out::Bf16(o) => _mm256_storeu_si256(o[at..at + 16].as_mut_ptr().cast(), to_bf16(v)),
                }
            }
        }
    }
}

/// Values `from..from + dst.len()` (at most 32) of `values` into `dst`
/// (in bf16: f32 rounded to nearest even), with masked vector loads and
/// stores.
#[target_feature(enable = "avx512f,avx512vl,avx512bw")]
unsafe fn piece(values: Values<'_>, from: usize, dst: PatchesMut<'_>) {
    use std::arch::x86_64::*;
    let n = dst.len();
    debug_assert!(n <= BLOCK && from + n <= values.len());
    let mask = |n: usize| if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    match dst {
        PatchesMut::Bf16(dst) => {
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
                        _mm256_mask_storeu_epi16(d.add(16 * half).cast(), m, to_bf16(x));
                    }
                }
            }
        }
        PatchesMut::F32(dst) => {
            let d = dst.as_mut_ptr();
            for half in 0..n.div_ceil(16) {
                let count = (n - 16 * half).min(16);
                let m = mask(count) as u16;
                let x = match values {
                    Values::Zero(_) => _mm512_setzero_ps(),
                    Values::F32(v) => _mm512_maskz_loadu_ps(m, v[from + 16 * half..].as_ptr()),
                    Values::Bf16(v) => {
                        let bits = _mm256_maskz_loadu_epi16(m, v[from + 16 * half..].as_ptr().cast());
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
                    }
                };
                _mm512_mask_storeu_ps(d.add(16 * half), m, x);
            }
        }
    }
}

/// 16 f32 to bf16, rounded to nearest even (NaN stays NaN), as
/// `vcvtneps2bf16` does, in AVX-512F (which every kernel has).
#[target_feature(enable = "avx512f,avx512vl,avx512bw")]
#[inline]
unsafe fn to_bf16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let bits = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    // A NaN keeps its high bits, made quiet (never rounded into infinity).
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
    let bits = _mm512_mask_blend_epi32(nan, rounded, quiet);
    _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(bits))
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

/// Rows of a block [`block_dots`] sums at once: 8 rows by 32 columns are
/// 16 vector accumulators, with the 2 vectors of weights and a broadcast
/// beside them in the 32 registers.
const DOT_ROWS: usize = 8;

/// [`block_f32`] on AVX-512 BF16: the same table of pointers, each to 32
/// bf16 values (16 pairs of the inner dimension), and the weights' panel
/// as [`PackedWeights::new`] packs it (1024 values a step).
///
/// # Safety
/// As [`block_f32`]; AVX-512 BF16 on the CPU.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn block_dots(at: &[[*const u16; DOT_ROWS]], b: *const u16, steps: usize, sums: &mut Sums) {
    debug_assert!(at.len().is_multiple_of(steps) && at.len() <= BLOCK / DOT_ROWS * steps);
    for s0 in (0..steps).step_by(DEPTH) {
        let s1 = (s0 + DEPTH).min(steps);
        for (group, at) in at.chunks_exact(steps).enumerate() {
            let sums = sums.0[group * DOT_ROWS * BLOCK..].as_mut_ptr();
            rows_dots(&at[s0..s1], b.add(s0 * BLOCK * BLOCK), sums, s0 > 0);
        }
    }
}

/// [`rows_fma`] on AVX-512 BF16: for each pair of the inner dimension, the
/// 32 columns' pairs of weights (two vectors, as the panel holds them)
/// times each row's pair broadcast, `vdpbf16ps` adding both products to
/// the f32 sums.
///
/// # Safety
/// As [`block_dots`]; `sums` writable for 8 rows of 32.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn rows_dots(at: &[[*const u16; DOT_ROWS]], b: *const u16, sums: *mut f32, add: bool) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; DOT_ROWS];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_loadu_ps(sums.add(r * BLOCK));
            acc[1] = _mm512_loadu_ps(sums.add(r * BLOCK + 16));
        }
    }
    for (step, rows) in at.iter().enumerate() {
        let b = b.add(step * BLOCK * BLOCK);
        for pair in 0..BLOCK / 2 {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(pair * 2 * BLOCK).cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(pair * 2 * BLOCK + BLOCK).cast()));
            for (row, acc) in rows.iter().zip(&mut acc) {
                let x = row.add(2 * pair).cast::<i32>().read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(x));
                acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(sums.add(r * BLOCK), acc[0]);
        _mm512_storeu_ps(sums.add(r * BLOCK + 16), acc[1]);
    }
}

/// What the pointer kernels read: f32 values ([`block_f32`]) or bf16 bits
/// ([`block_dots`]).
trait Element: Copy + Default {
    /// The activations, when they are in this dtype.
    fn values(src: Src<'_>) -> Option<&[Self]>;
    /// Where [`Job::gather`] writes patches of this dtype.
    fn patches(v: &mut [Self]) -> PatchesMut<'_>;
    /// One 32x32 block of sums, as [`block_f32`].
    ///
    /// # Safety
    /// As [`block_f32`]; for bf16, AVX-512 BF16 on the CPU.
    unsafe fn block(at: &[[*const Self; DOT_ROWS]], b: *const Self, steps: usize, sums: &mut Sums);
}

impl Element for f32 {
    fn values(src: Src<'_>) -> Option<&[f32]> {
        match src {
            Src::F32(v) => Some(v),
            Src::Bf16(_) => None,
        }
    }

    fn patches(v: &mut [f32]) -> PatchesMut<'_> {
        PatchesMut::F32(v)
    }

    unsafe fn block(at: &[[*const f32; DOT_ROWS]], b: *const f32, steps: usize, sums: &mut Sums) {
        block_f32(at, b, steps, sums)
    }
}

impl Element for u16 {
    fn values(src: Src<'_>) -> Option<&[u16]> {
        match src {
            Src::Bf16(v) => Some(v),
            Src::F32(_) => None,
        }
    }

    fn patches(v: &mut [u16]) -> PatchesMut<'_> {
        PatchesMut::Bf16(v)
    }

    unsafe fn block(at: &[[*const u16; DOT_ROWS]], b: *const u16, steps: usize, sums: &mut Sums) {
        block_dots(at, b, steps, sums)
    }
}

/// Steps of the inner dimension [`block_f32`] sums in registers before it
/// moves to the next group of rows: 8 steps of weights (32 KiB) stay in L1
/// while the block's four groups pass over them.
const DEPTH: usize = 8;

/// One 32x32 block of f32 sums on AVX-512F: the rows of `at` (for each
/// group of 8 rows, `steps` entries of the group's 8 pointers to a step's
/// 32 values; a block's last groups may be missing) times a panel of 32
/// columns of weights (`b`, as [`PackedWeights`] packs them). Rows of a
/// missing group are left as they were.
///
/// # Safety
/// AVX-512F on the CPU; each pointer of `at` readable for 32 values, `b`
/// for `steps` × 1024.
#[target_feature(enable = "avx512f")]
unsafe fn block_f32(at: &[[*const f32; DOT_ROWS]], b: *const f32, steps: usize, sums: &mut Sums) {
    debug_assert!(at.len().is_multiple_of(steps) && at.len() <= BLOCK / DOT_ROWS * steps);
    for s0 in (0..steps).step_by(DEPTH) {
        let s1 = (s0 + DEPTH).min(steps);
        for (group, at) in at.chunks_exact(steps).enumerate() {
            let sums = sums.0[group * DOT_ROWS * BLOCK..].as_mut_ptr();
            rows_fma(&at[s0..s1], b.add(s0 * BLOCK * BLOCK), sums, s0 > 0);
        }
    }
}

/// 8 rows by 32 columns of sums in fused multiply-adds: for each step,
/// for each of its 32, the columns' weights (two vectors) times each row's
/// value broadcast; the 16 accumulators stay in registers over all of
/// `at`'s steps, then are added to the sums (`add`) or written there.
///
/// # Safety
/// As [`block_f32`]; `sums` writable for 8 rows of 32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn rows_fma(at: &[[*const f32; DOT_ROWS]], b: *const f32, sums: *mut f32, add: bool) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; DOT_ROWS];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_loadu_ps(sums.add(r * BLOCK));
            acc[1] = _mm512_loadu_ps(sums.add(r * BLOCK + 16));
        }
    }
    for (step, rows) in at.iter().enumerate() {
        let b = b.add(step * BLOCK * BLOCK);
        for i in 0..BLOCK {
            let w0 = _mm512_loadu_ps(b.add(i * BLOCK));
            let w1 = _mm512_loadu_ps(b.add(i * BLOCK + 16));
            for (row, acc) in rows.iter().zip(&mut acc) {
                let x = _mm512_set1_ps(*row.add(i));
                acc[0] = _mm512_fmadd_ps(x, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, w1, acc[1]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(sums.add(r * BLOCK), acc[0]);
        _mm512_storeu_ps(sums.add(r * BLOCK + 16), acc[1]);
    }
}

/// Rows of patches a thread takes at once, for patches of `row_bytes`
/// each: about 512 KiB of them (L2), 32 to 512 rows, whole blocks.
fn chunk_rows(row_bytes: usize) -> usize {
    ((512 << 10) / row_bytes).clamp(BLOCK, 512) / BLOCK * BLOCK
}

/// [`Job::point`] for patches packed as [`Job::gather`] packs them.
fn point_packed<T>(patches: &[T], steps: usize, at: &mut [[*const T; DOT_ROWS]]) {
    for row in 0..patches.len() / (steps * BLOCK) {
        let (block, in_block) = (row / BLOCK, row % BLOCK);
        for step in 0..steps {
            let values = &patches[((block * steps + step) * BLOCK + in_block) * BLOCK..][..BLOCK];
            at[row / DOT_ROWS * steps + step][row % DOT_ROWS] = values.as_ptr();
        }
    }
}

/// f32 operations a second that one core's f32 kernel ([`block_f32`])
/// sustains for about `seconds` on one block of a 3x3 convolution over 64
/// channels (18 steps: 72 KiB of patches and weights, in L2), with no
/// gather and no epilogue: the ceiling of the pass's products, against the
/// peak of independent multiply-adds. `None` without AVX-512.
pub(crate) fn f32_block_flops(seconds: f64) -> Option<f64> {
    if !f32_available() {
        return None;
    }
    const STEPS: usize = 18;
    let a = vec![1.0f32; STEPS * BLOCK * BLOCK];
    let b = vec![0.5f32; STEPS * BLOCK * BLOCK];
    let mut at = vec![[std::ptr::null(); DOT_ROWS]; BLOCK / DOT_ROWS * STEPS];
    point_packed(&a, STEPS, &mut at);
    let mut sums = Sums([0.0; BLOCK * BLOCK]);
    let per_call = (STEPS * BLOCK * BLOCK * BLOCK * 2) as f64;
    let (mut calls, start) = (0usize, std::time::Instant::now());
    while calls == 0 || start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            // SAFETY: AVX-512F (checked above); `at` points into `a`, and
            // `a` and `b` hold `STEPS` steps.
            unsafe { block_f32(&at, b.as_ptr(), STEPS, &mut sums) };
            std::hint::black_box(&mut sums);
        }
        calls += 64;
    }
    Some(per_call * calls as f64 / start.elapsed().as_secs_f64())
}

/// bf16 floating-point operations (2 a multiply-add) a second that one
/// core's [`kernel`] sustains, measured for about `seconds` on independent
/// accumulators (no memory): the peak a bf16 pass is compared with. `None`
/// where [`available`] is not.
pub(crate) fn peak_flops(seconds: f64) -> Option<f64> {
    let kernel = kernel().ok()?;
    // Operations a round does, and the time of `rounds` of them.
    let (per_round, rate): (f64, &dyn Fn(usize) -> f64) = match kernel {
        // 4 products of 16 x 16 outputs, 32 deep.
        Kernel::Amx => (4.0 * 16.0 * 16.0 * 32.0 * 2.0, &tile_rounds),
        // 16 `vdpbf16ps` of 16 lanes, 2 products each.
        Kernel::Avx512Bf16 => (16.0 * 16.0 * 2.0 * 2.0, &dot_rounds),
    };
    let calibration = 20_000;
    let first = per_round * calibration as f64 / rate(calibration);
    let rounds = ((first * seconds) / per_round) as usize;
    Some((per_round * rounds as f64 / rate(rounds)).max(first))
}

/// Seconds for `rounds` rounds of 4 `tdpbf16ps`.
fn tile_rounds(rounds: usize) -> f64 {
    let ones = [half::bf16::ONE.to_bits(); 16 * BLOCK];
    let config = TileConfig::new();
    let start = std::time::Instant::now();
    // SAFETY: `kernel()` is `Amx`: the tiles are usable; a valid
    // configuration; the four tiles loaded from `ones`, 16 rows of 64 bytes.
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
    start.elapsed().as_secs_f64().max(1e-9)
}

/// Seconds for `rounds` rounds of 16 independent `vdpbf16ps`.
fn dot_rounds(rounds: usize) -> f64 {
    let start = std::time::Instant::now();
    // SAFETY: `kernel()` found AVX-512F and AVX-512 BF16.
    unsafe { dots(rounds) };
    start.elapsed().as_secs_f64().max(1e-9)
}

/// # Safety
/// AVX-512F and AVX-512 BF16 on the CPU.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dots(rounds: usize) {
    // SAFETY: registers only.
    unsafe {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            "vpternlogd zmm16, zmm16, zmm16, 0xff",
            "vpternlogd zmm17, zmm17, zmm17, 0xff",
            "2:",
            "vdpbf16ps zmm0, zmm16, zmm17",
            "vdpbf16ps zmm1, zmm16, zmm17",
            "vdpbf16ps zmm2, zmm16, zmm17",
            "vdpbf16ps zmm3, zmm16, zmm17",
            "vdpbf16ps zmm4, zmm16, zmm17",
            "vdpbf16ps zmm5, zmm16, zmm17",
            "vdpbf16ps zmm6, zmm16, zmm17",
            "vdpbf16ps zmm7, zmm16, zmm17",
            "vdpbf16ps zmm8, zmm16, zmm17",
            "vdpbf16ps zmm9, zmm16, zmm17",
            "vdpbf16ps zmm10, zmm16, zmm17",
            "vdpbf16ps zmm11, zmm16, zmm17",
            "vdpbf16ps zmm12, zmm16, zmm17",
            "vdpbf16ps zmm13, zmm16, zmm17",
            "vdpbf16ps zmm14, zmm16, zmm17",
            "vdpbf16ps zmm15, zmm16, zmm17",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) rounds.max(1) => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nostack, nomem),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The same convolution in plain f64 arithmetic, on inputs rounded to
    /// bf16 where `round` says (activations, weights).
    fn reference(
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
        weight: &[f32],
        n: usize,
        g: Geometry,
        (round_x, round_w): (bool, bool),
    ) -> Vec<f32> {
        let bf16 = |v: f32| half::bf16::from_f32(v).to_f32();
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
                                    let xv = x[((bi * h + iy) * w + ix) * c + ci];
                                    let wv = weight[((ky * k + kx) * c + ci) * n + j];
                                    let xv = if round_x { bf16(xv) } else { xv };
                                    let wv = if round_w { bf16(wv) } else { wv };
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

    /// Every kernel this CPU runs (whatever `SWEEP_CPU_BF16` says).
    fn kernels() -> Vec<Kernel> {
        let kernels: Vec<Kernel> = ["amx", "avx512"].into_iter().filter_map(|choice| detect(choice).ok()).collect();
        for (choice, kernel) in [("amx", Kernel::Amx), ("avx512", Kernel::Avx512Bf16)] {
            if let Err(why) = detect(choice) {
                eprintln!("skipped {}: {why}", kernel.name());
            }
        }
        kernels
    }

    #[test]
    fn bf16_convolutions_equal_plain_arithmetic_on_bf16_inputs() -> candle_core::Result<()> {
        for kernel in kernels() {
            convolutions_on(Some(kernel))?;
        }
        Ok(())
    }

    #[test]
    fn f32_convolutions_equal_plain_arithmetic() -> candle_core::Result<()> {
        if !f32_available() {
            eprintln!("skipped the f32 kernel: this CPU has no AVX-512");
            return Ok(());
        }
        convolutions_on(None)
    }

    /// Every shape on `kernel` (`None`: the f32 kernel).
    fn convolutions_on(kernel: Option<Kernel>) -> candle_core::Result<()> {
        let name = kernel.map_or("f32 kernel", Kernel::name);
        // Odd row counts (partial blocks), strides, padding, both input and
        // output dtypes, with and without residual and ReLU.
        // The stem's shape too: 3 channels, K = 147 padded to 160; f32
        // inputs of whole steps of channels are read in place, the others
        // gathered.
        for (b, h, w, c, n, k, stride) in [
            (1, 5, 7, 32, 32, 3, 1),
            (2, 9, 6, 64, 96, 3, 2),
            (3, 11, 13, 32, 64, 1, 1),
            (2, 8, 8, 64, 32, 1, 2),
            (2, 13, 9, 3, 64, 7, 2),
            // Rows enough for several chunks a thread.
            (2, 21, 20, 64, 32, 3, 1),
        ] {
            let g = Geometry { k, stride, pad: k / 2 };
            let (ho, wo) = ((h + 2 * g.pad - k) / stride + 1, (w + 2 * g.pad - k) / stride + 1);
            let x = Tensor::randn(0f32, 1f32, (b, h, w, c), &Device::Cpu)?;
            let weight: Vec<f32> = Tensor::randn(0f32, 0.1f32, (k * k * c * n,), &Device::Cpu)?.to_vec1()?;
            let bias: Vec<f32> = (0..n).map(|j| j as f32 / n as f32 - 0.5).collect();
            let residual = Tensor::randn(0f32, 1f32, (b, ho, wo, n), &Device::Cpu)?;
            let packed = match kernel {
                Some(_) => PackedWeights::new(&weight, k * k * c, n),
                None => PackedWeights::f32(&weight, k * k * c, n),
            };
            let packed = packed.expect("whole tiles");
            let res: Vec<f32> = residual.flatten_all()?.to_vec1()?;
            for (input_bf16, with_res, relu, out_bf16) in [
                (false, false, true, false),
                (true, true, true, false),
                (false, true, false, true),
                (true, false, false, true),
            ] {
                let xs = if input_bf16 { x.to_dtype(candle_core::DType::BF16)? } else { x.clone() };
                let bf16 = kernel.is_some();
                let rounded = (bf16 || input_bf16, bf16);
                let plain = reference(&x.flatten_all()?.to_vec1()?, (b, h, w, c), &weight, n, g, rounded);
                let epilogue = Epilogue { residual: with_res.then_some(&residual), relu, bf16_out: out_bf16 };
                let ys = conv_on(kernel, &xs, &packed, &bias, g, epilogue)?;
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
                    let at = format!("{name}: {b}x{h}x{w}x{c} k{k} s{stride} at {i}");
                    assert!((got - want).abs() <= tol, "{at}: {got} vs {want}");
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
        let Panels::Bf16(data) = &packed.data else { panic!("bf16") };
        for panel in data.chunks_exact(160 * 32) {
            assert_eq!(panel.iter().filter(|&&v| v == half::bf16::ONE.to_bits()).count(), 147 * 32);
        }
        let packed = PackedWeights::f32(&[1.0; 147 * 64], 147, 64).expect("the stem's shape");
        let Panels::F32(data) = &packed.data else { panic!("f32") };
        for panel in data.chunks_exact(160 * 32) {
            assert_eq!(panel.iter().filter(|&&v| v == 1.0).count(), 147 * 32);
            assert!(panel[147 * 32..].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn sweep_cpu_bf16_caps_the_kernel() {
        assert_eq!(detect("off"), Err("SWEEP_CPU_BF16 is off"));
        assert!(detect("tiles").unwrap_err().contains("none of amx, avx512 and off"));
        // Never the tiles under `avx512`, never anything but them under `amx`.
        assert_ne!(detect("avx512"), Ok(Kernel::Amx));
        assert!(matches!(detect("amx"), Ok(Kernel::Amx) | Err(_)));
        // With nothing said, the best there is.
        let best = detect("");
        assert_eq!(best, detect("amx").or(detect("avx512")));
    }

    #[test]
    fn the_kernels_peak_is_measured() {
        let Ok(kernel) = kernel() else { return };
        let gflops = peak_flops(0.02).expect("a kernel") / 1e9;
        // At least a bf16 FMA's worth a nanosecond; at most far beyond any CPU.
        assert!(gflops > 1.0 && gflops < 1e5, "{}: {gflops} GFLOP/s", kernel.name());
    }
}
