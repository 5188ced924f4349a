//! The backbone pass, computed once: images are decoded and preprocessed on
//! every core ([`decode_threads`]), batched, run through the frozen backbone
//! (split across devices when there are several) and stored in
//! a content-addressed cache that every job of every sweep on the same images,
//! transform and weights reads instead of running the backbone again.

mod device_memory;
mod mapped;

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use candle_core::{Device, Tensor};

use crate::backbone::{Backbone, DType, FeatureDType, ModelConfig, Weights};
use crate::data::{Dataset, Item, Source};
use crate::image_check::{check_images, inspect};
use crate::memory::{self, human_bytes};
use crate::preprocess::preprocess;
use crate::synthetic::synthetic_image;
use crate::Error;

pub use device_memory::forced_limit as forced_device_memory;

/// Bumped whenever what a cache entry holds, or how it is computed, changes.
const CACHE_FORMAT: &str = "sweep-features-v3";

/// An entry's bytes beyond its features (the safetensors header), rounded up.
const ENTRY_OVERHEAD: u64 = 64 << 10;

/// A folder of feature files named by the hash of everything they depend on.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

/// Whether the backbone ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The features were read from the cache: no backbone pass.
    Hit,
    /// No entry existed: the backbone ran and the entry was written.
    Built,
    /// An entry existed but failed its check: the backbone ran again.
    Rebuilt {
        /// What was wrong with the old entry.
        reason: String,
    },
}

/// The features of a data set.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[N, D]` f32, in data-set order: the cache entry mapped.
    pub data: FeatureMatrix,
    /// The cache key: a hash of images, transform, backbone and weights.
    pub key: String,
    /// Whether the backbone ran.
    pub outcome: CacheOutcome,
}

/// An `[N, D]` matrix of f32 features, row-major: a cache entry mapped
/// read-only (its pages are the file's, not the process's memory: a run
/// never holds an anonymous copy of its features), or floats in memory (a
/// test's, a bench's, or an entry a big-endian CPU had to convert). Cheap to
/// clone: the rows are shared.
#[derive(Clone)]
pub struct FeatureMatrix {
    rows: usize,
    dim: usize,
    store: Arc<Store>,
}

enum Store {
    /// The features are the mapping's bytes from `start`, f32 or f16,
    /// checked to be aligned when mapped.
    Mapped {
        map: mapped::Mapping,
        start: usize,
        dtype: FeatureDType,
    },
    Owned(Vec<f32>),
}

/// The rows of a [`FeatureMatrix`], row after row, in the cache's type.
#[derive(Debug, Clone, Copy)]
pub enum FeatureSlice<'a> {
    /// 32-bit floats, read in place.
    F32(&'a [f32]),
    /// Half precision, converted to f32 when rows are gathered.
    F16(&'a [half::f16]),
}

impl std::fmt::Debug for FeatureMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureMatrix")
            .field("rows", &self.rows)
            .field("dim", &self.dim)
            .field("mapped", &self.is_mapped())
            .field("dtype", &self.dtype())
            .finish()
    }
}

impl FeatureMatrix {
    /// `rows` × `dim` floats, row-major.
    pub fn from_vec(data: Vec<f32>, rows: usize, dim: usize) -> Result<FeatureMatrix, Error> {
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(Error::State(format!("{} floats are not {rows} rows of {dim}", data.len())));
        }
        Ok(FeatureMatrix { rows, dim, store: Arc::new(Store::Owned(data)) })
    }

    /// A copy of a `[N, D]` tensor's values.
    pub fn from_tensor(tensor: &Tensor) -> Result<FeatureMatrix, Error> {
        let (rows, dim) = tensor.dims2()?;
        let data: Vec<f32> = tensor.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        FeatureMatrix::from_vec(data, rows, dim)
    }

    /// The bytes `start..` of `map` as `rows` × `dim` features of `dtype`,
    /// in place when this CPU can (little-endian, aligned), else converted
    /// into f32s in memory.
    fn mapped(map: mapped::Mapping, start: usize, rows: usize, dim: usize, dtype: FeatureDType) -> FeatureMatrix {
        let bytes = &map.bytes()[start..start + dtype.bytes() * rows * dim];
        let in_place = match dtype {
            FeatureDType::F32 => mapped::floats(bytes).is_some(),
            FeatureDType::F16 => mapped::halves(bytes).is_some(),
        };
        let store = match (in_place, dtype) {
            (true, _) => Store::Mapped { map, start, dtype },
            (false, FeatureDType::F32) => {
                Store::Owned(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
            (false, FeatureDType::F16) => {
                Store::Owned(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect())
            }
        };
        FeatureMatrix { rows, dim, store: Arc::new(store) }
    }

    /// The number of rows (images).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The width of a row (the backbone's features).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `(rows, dim)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.dim)
    }

    /// Whether the rows are a mapped cache entry's (not a copy in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.store, Store::Mapped { .. })
    }

    /// How the features are held: f16 only when mapped from an f16 entry.
    pub fn dtype(&self) -> FeatureDType {
        match &*self.store {
            Store::Mapped { dtype, .. } => *dtype,
            Store::Owned(_) => FeatureDType::F32,
        }
    }

    /// Every feature, row after row, in the type they are held in.
    pub fn view(&self) -> FeatureSlice<'_> {
        match &*self.store {
            Store::Mapped { map, start, dtype } => {
                let bytes = &map.bytes()[*start..*start + dtype.bytes() * self.rows * self.dim];
                match dtype {
                    FeatureDType::F32 => FeatureSlice::F32(mapped::floats(bytes).expect("checked when mapped")),
                    FeatureDType::F16 => FeatureSlice::F16(mapped::halves(bytes).expect("checked when mapped")),
                }
            }
            Store::Owned(data) => FeatureSlice::F32(data),
        }
    }

    /// Row `i`, appended to `out` as f32s.
    pub fn extend_row(&self, i: usize, out: &mut Vec<f32>) {
        let range = i * self.dim..(i + 1) * self.dim;
        match self.view() {
            FeatureSlice::F32(data) => out.extend_from_slice(&data[range]),
            FeatureSlice::F16(data) => out.extend(data[range].iter().map(|x| x.to_f32())),
        }
    }

    /// The rows `idx`, in that order, as a `[idx.len(), D]` f32 tensor on the
    /// CPU: what the Candle path trains on.
    pub fn gather(&self, idx: &[usize]) -> Result<Tensor, Error> {
        let mut out = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            if i >= self.rows {
                return Err(Error::State(format!("sample {i} of {} has no features", self.rows)));
            }
            self.extend_row(i, &mut out);
        }
        Ok(Tensor::from_vec(out, (idx.len(), self.dim), &Device::Cpu)?)
    }

    /// A copy of the whole matrix as a `[N, D]` f32 tensor on the CPU.
    pub fn to_tensor(&self) -> Result<Tensor, Error> {
        self.gather(&(0..self.rows).collect::<Vec<_>>())
    }
}

/// Progress of the backbone pass: called with the number of images done.
pub type Progress<'a> = &'a (dyn Fn(usize) + Sync);

impl FeatureCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> FeatureCache {
        FeatureCache { dir: dir.into() }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// Whether an entry for `key` is there (not whether it passes its check):
    /// a run loads the backbone before its pass only when none is.
    pub fn has(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    /// The entry `key`, mapped (see [`FeatureMatrix`]) after its checksum is
    /// verified: the check reads the file once through the mapping, so its
    /// pages are the page cache's, never a copy in this process's memory.
    fn load(&self, key: &str) -> Result<Option<FeatureMatrix>, String> {
        let path = self.path(key);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            // A cache folder that is a file: no entry; `prepare` says what is wrong.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                return Ok(None)
            }
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        let map = mapped::Mapping::open(&file).map_err(|e| format!("cannot map: {e}"))?;
        let bytes = map.bytes();
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("key").map(String::as_str) != Some(key) {
            return Err("its key does not match its name".to_owned());
        }
        let view = st.tensor("features").map_err(|e| e.to_string())?;
        let (dtype, rows, dim) = match (view.dtype(), view.shape()) {
            (safetensors::Dtype::F32, &[rows, dim]) => (FeatureDType::F32, rows, dim),
            (safetensors::Dtype::F16, &[rows, dim]) => (FeatureDType::F16, rows, dim),
            (dtype, shape) => return Err(format!("its features are {dtype:?} {shape:?}, not a matrix of F32 or F16")),
        };
        let checksum = blake3::hash(view.data()).to_hex().to_string();
        if meta.get("checksum") != Some(&checksum) {
            return Err("its checksum does not match its contents".to_owned());
        }
        let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        Ok(Some(FeatureMatrix::mapped(map, start, rows, dim, dtype)))
    }

    /// Stores `blocks` (rows of `dim` floats, in order, `rows` in all) as the
    /// entry `key` in one streamed pass: the header is written with a
    /// placeholder checksum of the same length, each block is hashed and
    /// written as it comes, and the checksum is written into the header
    /// last. Nothing of the entry's size is held in memory (a block at a
    /// time when the caller makes them).
    pub(crate) fn store<B: AsRef<[f32]>>(
        &self,
        key: &str,
        rows: usize,
        dim: usize,
        dtype: FeatureDType,
        blocks: impl IntoIterator<Item = B>,
    ) -> Result<(), Error> {
        self.store_raw(key, rows, dim, dtype, blocks.into_iter().map(|b| Block::Floats(b)))
    }

    /// [`Self::store`] from blocks of floats or of bytes already in `dtype`
    /// (shards joined from their mappings).
    fn store_raw<'b, B: AsRef<[f32]>>(
        &self,
        key: &str,
        rows: usize,
        dim: usize,
        dtype: FeatureDType,
        blocks: impl IntoIterator<Item = Block<'b, B>>,
    ) -> Result<(), Error> {
        let path = self.path(key);
        let err = |message: String| Error::Cache { path: path.clone(), message };
        std::fs::create_dir_all(&self.dir).map_err(|e| err(format!("cannot create the folder: {e}")))?;
        const PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        let header = |checksum: &str| -> Result<Vec<u8>, Error> {
            let header = serde_json::json!({
                "__metadata__": { "key": key, "checksum": checksum, "format": CACHE_FORMAT },
                "features": {
                    "dtype": dtype.name().to_uppercase(),
                    "shape": [rows, dim],
                    "data_offsets": [0, dtype.bytes() * rows * dim],
                },
            });
            let mut header = serde_json::to_vec(&header).map_err(|e| err(e.to_string()))?;
            // safetensors' own padding: the data starts 8-byte aligned, so a mapped entry's floats are aligned.
            header.resize(header.len().next_multiple_of(8), b' ');
            Ok(header)
        };
        let placeholder = header(PLACEHOLDER)?;
        // Write beside, then rename: a reader never sees half a file, and a
        // process that mapped the old entry keeps it (see `mapped::Mapping`).
        // A process killed in between leaves `KEY.tmpPID`, which the next pass
        // removes (`remove_stale_temporaries`).
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> Result<(), String> {
            let io = |e: std::io::Error| format!("cannot write: {e}");
            let file = std::fs::File::create(&tmp).map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            out.write_all(&(placeholder.len() as u64).to_le_bytes()).map_err(io)?;
            out.write_all(&placeholder).map_err(io)?;
            let (mut checksum, mut floats) = (blake3::Hasher::new(), 0usize);
            let mut write = |bytes: &[u8]| {
                checksum.update(bytes);
                out.write_all(bytes)
            };
            for block in blocks {
                match block {
                    Block::Floats(block) => {
                        let block = block.as_ref();
                        floats += block.len();
                        for_each_le_chunk(block, dtype, &mut write).map_err(io)?;
                    }
                    Block::Bytes(bytes) => {
                        floats += bytes.len() / dtype.bytes();
                        write(bytes).map_err(io)?;
                    }
                }
            }
            if floats != rows * dim {
                return Err(format!("{floats} floats were written for {rows} rows of {dim}"));
            }
            let header = header(&checksum.finalize().to_hex()).map_err(|e| e.to_string())?;
            debug_assert_eq!(header.len(), placeholder.len());
            let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
            file.seek(std::io::SeekFrom::Start(8)).map_err(io)?;
            file.write_all(&header).map_err(io)?;
            file.sync_all().map_err(io)
        };
        let written = write()
            .map_err(err)
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| err(format!("cannot rename into place: {e}"))));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Checks, before a backbone pass, that an entry of `bytes` can be
    /// stored: the folder is created if need be, must be a folder, must take
    /// a probe file, and (where the platform tells it: statvfs on Unix) must
    /// have `bytes` free. Otherwise a cache folder that is a file, read-only
    /// or full would fail the run only after the whole pass.
    pub fn prepare(&self, bytes: u64) -> Result<(), Error> {
        let err = |message: String| Error::Cache { path: self.dir.clone(), message };
        if self.dir.exists() && !self.dir.is_dir() {
            return Err(err("not a folder".to_owned()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| err(format!("cannot create the folder: {e}")))?;
        let probe = self.dir.join(format!(".sweep-probe-{}", std::process::id()));
        std::fs::write(&probe, b"sweep").map_err(|e| err(format!("cannot write in the folder: {e}")))?;
        std::fs::remove_file(&probe).map_err(|e| err(format!("cannot remove {}: {e}", probe.display())))?;
        if let Some(free) = free_space(&self.dir) {
            if free < bytes {
                return Err(err(format!(
                    "the features need {} but only {} are free",
                    human_bytes(bytes),
                    human_bytes(free)
                )));
            }
        }
        Ok(())
    }

    /// Removes the temporary files (`KEY.tmpPID`) that a pass killed while
    /// storing an entry left behind: on Linux, those whose process is gone
    /// (no `/proc/PID`); elsewhere, those older than a day. Returns how many
    /// were removed; a failure is logged, never fatal.
    pub(crate) fn remove_stale_temporaries(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temporary_pid) else { continue };
            let stale = match process_alive(pid) {
                Some(alive) => !alive,
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 24 * 3600)),
            };
            if !stale {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), pid, "removed a stale feature cache temporary");
                    removed += 1;
                }
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale temporary"),
            }
        }
        removed
    }
}

/// Hands `floats` to `f` as little-endian bytes of `dtype`: in place for
/// f32 on a little-endian CPU, else converted a block at a time.
fn for_each_le_chunk(
    floats: &[f32],
    dtype: FeatureDType,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match (dtype, mapped::bytes_of(floats)) {
        (FeatureDType::F32, Some(bytes)) => f(bytes),
        (FeatureDType::F32, None) => floats
            .chunks(1 << 16)
            .try_for_each(|block| f(&block.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())),
        // Rounded to nearest, as torch's `.half()` rounds.
        (FeatureDType::F16, _) => floats.chunks(1 << 16).try_for_each(|block| {
            f(&block.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect::<Vec<u8>>())
        }),
    }
}

/// A block of an entry being stored: floats, or bytes already in the entry's type.
enum Block<'a, B> {
    Floats(B),
    Bytes(&'a [u8]),
}

/// The PID of a cache temporary's name, `KEY.tmpPID` (`KEY`: 32 hex digits).
fn temporary_pid(name: &str) -> Option<u32> {
    let (key, pid) = name.split_once(".tmp")?;
    let is_key = key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit());
    let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if is_key && is_pid {
        pid.parse().ok()
    } else {
        None
    }
}

/// Whether process `pid` is alive, where that is cheap to know without
/// `unsafe`: on Linux with `/proc` mounted. A reused PID reads as alive,
/// which only keeps a temporary longer.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    (cfg!(target_os = "linux") && proc.join("self").exists()).then(|| proc.join(pid.to_string()).exists())
}

/// Bytes free to this user under `dir`, where the platform tells it.
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let block = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    Some(st.f_bavail.saturating_mul(block))
}

/// Bytes free to this user under `dir`, where the platform tells it.
#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// The cache key of a data set under a model: BLAKE3 over the cache format,
/// the backbone, the weights' bytes, the transform and every image's bytes.
fn cache_key(dataset: &Dataset, model: &ModelConfig) -> Result<String, Error> {
    let mut digests = Vec::with_capacity(dataset.items.len());
    for item in &dataset.items {
        if let Source::File(path) = &item.source {
            digests.push(hash_file(path).map_err(|message| Error::Image { path: path.clone(), message })?);
        }
    }
    features_key(dataset, model, &digests)
}

/// [`cache_key`] from the hashes of the data set's files, in order (one for
/// each file item; generated items have none).
pub(crate) fn features_key(dataset: &Dataset, model: &ModelConfig, digests: &[blake3::Hash]) -> Result<String, Error> {
    let mut h = blake3::Hasher::new();
    h.update(CACHE_FORMAT.as_bytes());
    h.update(model.arch.name().as_bytes());
    h.update(model.dtype.name().as_bytes());
    match &model.weights {
        Weights::Random { seed } => {
            h.update(format!("random:{seed}").as_bytes());
        }
        Weights::Safetensors(path) | Weights::Pth(path) => {
            h.update(
                hash_file(path)
                    .map_err(|message| Error::Weights { path: path.display().to_string(), message })?
                    .as_bytes(),
            );
        }
        Weights::Hub { repo } => {
            h.update(format!("hub:{repo}").as_bytes());
        }
    }
    h.update(format!("{}|{:?}|{:?}", model.image_size, model.mean, model.std).as_bytes());
    // Only when not RGB: the keys of every RGB model stay as they were.
    if model.channel_order != crate::ChannelOrder::Rgb {
        h.update(format!("|{}", model.channel_order.name()).as_bytes());
    }
    // Likewise only when not f32: every f32 entry keeps its key.
    if model.feature_dtype != FeatureDType::F32 {
        h.update(format!("|features-{}", model.feature_dtype.name()).as_bytes());
    }
    if let Some(cfg) = &dataset.synthetic {
        h.update(format!("synthetic:{cfg:?}").as_bytes());
    }
    let mut digests = digests.iter();
    for item in &dataset.items {
        match &item.source {
            Source::File(path) => {
                let digest = digests.next().ok_or_else(|| Error::Image {
                    path: path.clone(),
                    message: "no hash of its bytes was taken".to_owned(),
                })?;
                h.update(digest.as_bytes());
            }
            Source::Synthetic { index } => {
                h.update(&(*index as u64).to_le_bytes());
            }
        }
    }
    Ok(h.finalize().to_hex()[..32].to_owned())
}

pub(crate) fn hash_file(path: &Path) -> Result<blake3::Hash, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Reads and decodes an image file (JPEG or PNG, told by its bytes, not its
/// name) to 8-bit RGB, as torchvision's loader does (`Image.open(f).convert("RGB")`):
/// grey is repeated, alpha dropped. A truncated file (a JPEG without its
/// end-of-image marker, a PNG cut inside a chunk or before `IEND`) is
/// refused, as Pillow refuses it, rather than decoded with grey rows.
pub fn decode_image(path: &Path) -> Result<image::RgbImage, Error> {
    let err = |message: String| Error::Image { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let header = inspect(&bytes).map_err(err)?;
    let img = image::load_from_memory_with_format(&bytes, header.format).map_err(|e| err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("the image has no pixels".to_owned()));
    }
    Ok(img.into_rgb8())
}

/// Decodes one image to RGB.
pub(crate) fn decode(dataset: &Dataset, source: &Source) -> Result<image::RgbImage, Error> {
    match source {
        Source::File(path) => decode_image(path),
        Source::Synthetic { index } => {
            let cfg = dataset.synthetic.as_ref().expect("synthetic items come from a synthetic data set");
            Ok(synthetic_image(cfg, *index))
        }
    }
}

/// Returns the data set's features, from the cache when it holds them, else
/// by one streaming backbone pass (decode, batch, forward, store), after which
/// the cache holds them. Before that pass, the cache folder is checked
/// ([`FeatureCache::prepare`]) and so is every image file
/// ([`check_images`]): all bad files are reported at once, as
/// [`Error::BadImages`]. Temporaries that killed passes left in the cache
/// are removed first.
pub fn compute_features(
    dataset: &Dataset,
    model: &ModelConfig,
    cache: &FeatureCache,
    workers: usize,
    batch_size: usize,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Features, Error> {
    let key = cache_key(dataset, model)?;
    let devices = std::slice::from_ref(device);
    let pass = Pass { dataset, model, cache, workers, batch_size, devices, progress, backbone: None };
    pass.run(key, true)
}

/// [`compute_features`] for a caller that has hashed every file (the cache
/// key comes from the data set's [`DataManifest`](crate::DataManifest)) and
/// checked every image ([`check_images`] or [`skip_bad_images`](crate::skip_bad_images)):
/// no file is read twice before the pass. The pass is split across
/// `devices`, a backbone on each. A `backbone` already loaded for `model`
/// on the first device (for the [sanity check](crate::sanity_check)) is
/// used rather than loaded again.
#[allow(clippy::too_many_arguments)]
pub fn compute_features_keyed(
    dataset: &Dataset,
    model: &ModelConfig,
    key: &str,
    cache: &FeatureCache,
    workers: usize,
    batch_size: usize,
    devices: &[Device],
    progress: Progress<'_>,
    backbone: Option<Backbone>,
) -> Result<Features, Error> {
    let pass = Pass { dataset, model, cache, workers, batch_size, devices, progress, backbone };
    pass.run(key.to_owned(), false)
}

/// Refuses a pass whose buffers (the features, the batches in flight) would
/// not fit in the memory available, naming the data set's folder.
fn check_memory(
    dataset: &Dataset,
    model: &ModelConfig,
    batch_size: usize,
    workers: usize,
    devices: usize,
) -> Result<(), Error> {
    let what = match dataset.items.first().map(|i| &i.source) {
        Some(Source::File(path)) => path.parent().unwrap_or(path).display().to_string(),
        _ => "synthetic data".to_owned(),
    };
    let decoders = decode_threads(workers);
    memory::check_pass(&what, dataset.items.len(), model, batch_size, decoders, devices, memory::available())
}

/// A backbone loaded on a device, and the largest backbone batch the
/// device has been found to hold (`usize::MAX` until one ran out of
/// memory): kept for every pass it makes, so a sharded pass halves once.
struct OnDevice {
    backbone: Backbone,
    device: Device,
    fits: AtomicUsize,
}

impl OnDevice {
    fn new(backbone: Backbone, device: Device) -> OnDevice {
        OnDevice { backbone, device, fits: AtomicUsize::new(usize::MAX) }
    }
}

/// A backbone for each of `devices`: `first`, if given, is the first's.
fn load_backbones(model: &ModelConfig, devices: &[Device], first: Option<Backbone>) -> Result<Vec<OnDevice>, Error> {
    let mut first = first;
    devices
        .iter()
        .map(|device| {
            let backbone = match first.take() {
                Some(backbone) => backbone,
                None => Backbone::load(model, device)?,
            };
            Ok(OnDevice::new(backbone, device.clone()))
        })
        .collect()
}

/// The arguments of a feature pass.
struct Pass<'a> {
    dataset: &'a Dataset,
    model: &'a ModelConfig,
    cache: &'a FeatureCache,
    workers: usize,
    batch_size: usize,
    devices: &'a [Device],
    progress: Progress<'a>,
    backbone: Option<Backbone>,
}

impl Pass<'_> {
    fn run(self, key: String, check: bool) -> Result<Features, Error> {
        let Pass { dataset, model, cache, workers, batch_size, devices, progress, backbone } = self;
        cache.remove_stale_temporaries();
        // A cache entry is mapped, never read into memory: only a pass needs
        // memory of the features' size.
        let outcome = match cache.load(&key) {
            Ok(Some(data)) if data.dims() == (dataset.items.len(), model.arch.feature_dim()) => {
                tracing::info!(key, "feature cache hit: no backbone pass");
                progress(dataset.items.len());
                return Ok(Features { data, key, outcome: CacheOutcome::Hit });
            }
            Ok(Some(_)) => CacheOutcome::Rebuilt { reason: "its shape does not match the data set".to_owned() },
            Ok(None) => CacheOutcome::Built,
            Err(reason) => {
                tracing::warn!(path = %cache.path(&key).display(), reason, "feature cache entry is bad; rebuilding");
                CacheOutcome::Rebuilt { reason }
            }
        };
        // Nothing of the pass's size (the features it computes) is allocated
        // before it is known to fit. What would fail only after the pass is
        // found before it: a cache that cannot take the entry, and every bad
        // image (all of them, not the first).
        check_memory(dataset, model, batch_size, workers, devices.len())?;
        let (n, dim) = (dataset.items.len(), model.arch.feature_dim());
        cache.prepare((n * dim * 4) as u64 + ENTRY_OVERHEAD)?;
        if check {
            check_images(dataset, decode_threads(workers))?;
        }
        let forced = device_memory::forced_limit()?;
        let backbones = load_backbones(model, devices, backbone)?;
        let threads = decode_threads(workers);
        let data = run_backbone(dataset, model, &backbones, threads, batch_size, forced, progress)?;
        drop(backbones);
        cache.store(&key, n, dim, model.feature_dtype, [&data])?;
        tracing::info!(key, images = dataset.items.len(), "features computed and cached");
        // The jobs read the stored entry, mapped: the pass's copy is freed
        // before any of them starts.
        drop(data);
        let data = cached_features(cache, &key, n, dim).ok_or_else(|| Error::Cache {
            path: cache.path(&key),
            message: "the entry just written does not read back".to_owned(),
        })?;
        Ok(Features { data, key, outcome })
    }
}

/// The cache key of shard `shard` (from 0) of `shards` of entry `key`: a
/// cache entry of its own, written by rename like every entry.
pub fn shard_key(key: &str, shard: usize, shards: usize) -> String {
    format!("{key}.shard-{shard:05}-of-{shards:05}")
}

/// A loaded backbone that computes shards of a data set's feature pass,
/// each stored in the cache as its own entry ([`shard_key`]), for passes
/// that several processes share ([`join_shards`] makes the entry).
pub struct ShardPass<'a> {
    dataset: &'a Dataset,
    model: &'a ModelConfig,
    cache: &'a FeatureCache,
    backbones: Vec<OnDevice>,
    workers: usize,
    batch_size: usize,
}

impl<'a> ShardPass<'a> {
    /// Checks that the pass fits in memory and the cache can take the entry
    /// and its shards (the images are checked by the caller), then loads a
    /// backbone on each of `devices` (but for the first, if the caller hands
    /// over one it loaded).
    pub fn new(
        dataset: &'a Dataset,
        model: &'a ModelConfig,
        cache: &'a FeatureCache,
        workers: usize,
        batch_size: usize,
        devices: &[Device],
        backbone: Option<Backbone>,
    ) -> Result<ShardPass<'a>, Error> {
        check_memory(dataset, model, batch_size, workers, devices.len())?;
        cache.remove_stale_temporaries();
        let (n, dim) = (dataset.items.len(), model.arch.feature_dim());
        cache.prepare(2 * ((n * dim * 4) as u64 + ENTRY_OVERHEAD))?;
        let backbones = load_backbones(model, devices, backbone)?;
        Ok(ShardPass { dataset, model, cache, backbones, workers, batch_size })
    }

    /// Computes the features of the data set's images `range` and stores
    /// them as shard `shard` of `shards` of entry `key`. `progress` counts
    /// the shard's images.
    pub fn compute(
        &self,
        key: &str,
        shard: usize,
        shards: usize,
        range: std::ops::Range<usize>,
        progress: Progress<'_>,
    ) -> Result<(), Error> {
        let part = Dataset {
            classes: self.dataset.classes.clone(),
            items: self.dataset.items[range].to_vec(),
            synthetic: self.dataset.synthetic,
        };
        let (threads, forced) = (decode_threads(self.workers), device_memory::forced_limit()?);
        let data = run_backbone(&part, self.model, &self.backbones, threads, self.batch_size, forced, progress)?;
        let dim = self.model.arch.feature_dim();
        self.cache.store(&shard_key(key, shard, shards), data.len() / dim, dim, self.model.feature_dtype, [&data])
    }
}

/// The entry `key` of `images` × `dim` features, if the cache holds it whole and sound.
pub fn cached_features(cache: &FeatureCache, key: &str, images: usize, dim: usize) -> Option<FeatureMatrix> {
    match cache.load(key) {
        Ok(Some(data)) if data.dims() == (images, dim) => Some(data),
        _ => None,
    }
}

/// Joins the shard entries of `key` (`shards`: each shard's number and
/// image count, in data order) into the entry itself, streamed from their
/// mappings and written by rename, then removes them; the entry is returned
/// mapped. `Ok(Err(shards))`: those shards' entries are missing
/// or unsound, to be computed again (unless another process has joined the
/// entry meanwhile: check [`cached_features`] first).
pub fn join_shards(
    cache: &FeatureCache,
    key: &str,
    shards: &[(usize, usize)],
    dim: usize,
) -> Result<Result<FeatureMatrix, Vec<usize>>, Error> {
    let count = shards.len();
    let mut parts = Vec::with_capacity(count);
    let mut bad = Vec::new();
    for &(shard, images) in shards {
        match cache.load(&shard_key(key, shard, count)) {
            Ok(Some(data)) if data.dims() == (images, dim) => parts.push(data),
            _ => bad.push(shard),
        }
    }
    if !bad.is_empty() {
        return Ok(Err(bad));
    }
    let images = shards.iter().map(|&(_, images)| images).sum();
    // Every shard was stored by the same pass, so in the same type.
    let dtype = parts.first().map_or(FeatureDType::F32, FeatureMatrix::dtype);
    if parts.iter().any(|p| p.dtype() != dtype) {
        return Ok(Err(shards.iter().map(|&(shard, _)| shard).collect()));
    }
    let blocks = parts.iter().map(|p| match p.view() {
        FeatureSlice::F32(floats) => Block::<&[f32]>::Floats(floats),
        FeatureSlice::F16(halves) => Block::Bytes(mapped::bytes_of_halves(halves)),
    });
    cache.store_raw(key, images, dim, dtype, blocks)?;
    drop(parts);
    for &(shard, _) in shards {
        let _ = std::fs::remove_file(cache.path(&shard_key(key, shard, count)));
    }
    let data = cached_features(cache, key, images, dim).ok_or_else(|| Error::Cache {
        path: cache.path(key),
        message: "the entry just joined does not read back".to_owned(),
    })?;
    Ok(Ok(data))
}

/// The threads that decode images for a backbone pass: `workers` (the
/// sweep's setting), or every core the pass's compute may use
/// (`RAYON_NUM_THREADS`, else the CPUs this process may run on, at most
/// [`MAX_AUTO_DECODERS`]) when there are more: a device fed by fewer
/// decoders waits for them (on a GPU, four decoders held the pass to 600
/// images/s against a backbone of 1,300).
pub fn decode_threads(workers: usize) -> usize {
    workers.max(candle_core::utils::get_num_threads().min(MAX_AUTO_DECODERS)).max(1)
}

/// The most decoders a pass starts unless `workers` asks for more: at
/// about 360 of the paper's 500x375 JPEGs a second a core, several times
/// what one GPU's ResNet-50 takes, with 64 batches in memory.
const MAX_AUTO_DECODERS: usize = 32;

/// The backbone pass over `dataset` with `threads` decoders: one loaded
/// backbone per device, each taking a contiguous run of whole batches, so
/// every image goes through the backbone in the same batch as in a pass on
/// one device. `forced`: the device memory a batch may use, in bytes
/// ([`device_memory`]). The features, in data order.
fn run_backbone(
    dataset: &Dataset,
    model: &ModelConfig,
    backbones: &[OnDevice],
    threads: usize,
    batch_size: usize,
    forced: Option<u64>,
    progress: Progress<'_>,
) -> Result<Vec<f32>, Error> {
    let n = dataset.items.len();
    let dim = model.arch.feature_dim();
    let batch_size = batch_size.max(1);
    let batches = n.div_ceil(batch_size);
    if backbones.is_empty() {
        return Err(Error::Device("no device given for the backbone pass".to_owned()));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let parts = backbones.len().min(batches);
    let per_part = batches.div_ceil(parts) * batch_size;
    let mut out = vec![0f32; n * dim];
    if parts > 1 {
        tracing::info!(devices = parts, images = n, "the backbone pass is split across devices");
    }
    // Progress is the sum of the parts'. A part that fails stops the parts
    // after it in data order (their errors could only be later ones), so
    // the error reported is the first in data order, as on one device.
    let done: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
    let failed = AtomicUsize::new(usize::MAX);
    let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = out
            .chunks_mut(per_part * dim)
            .zip(backbones)
            .enumerate()
            .map(|(part, (out, on))| {
                let (done, failed) = (&done, &failed);
                let first = part * per_part;
                let items = first..(first + per_part).min(n);
                let decoders = (threads / parts).max(1);
                scope.spawn(move || {
                    let report = |images: usize| {
                        done[part].store(images, Ordering::Relaxed);
                        progress(done.iter().map(|d| d.load(Ordering::Relaxed)).sum());
                    };
                    let stopped = || failed.load(Ordering::Relaxed) < part;
                    let pass = DevicePass { dataset, model, on, decoders, batch_size, limit: forced };
                    let result = pass.run(items, out, &stopped, &report);
                    if result.is_err() {
                        failed.fetch_min(part, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a device's pass does not panic")).collect()
    });
    results.into_iter().collect::<Result<(), Error>>()?;
    Ok(out)
}

/// One device's share of a backbone pass.
struct DevicePass<'a> {
    dataset: &'a Dataset,
    model: &'a ModelConfig,
    on: &'a OnDevice,
    decoders: usize,
    batch_size: usize,
    limit: Option<u64>,
}

impl DevicePass<'_> {
    /// The features of the images `range` into `out`, reporting the images
    /// done; gives up (with `Ok`) when `stopped` says so. A batch the device
    /// has no memory for is run in halves, and the halved size is kept for
    /// the rest of the pass and the device's later passes (features do not
    /// depend on a batch's other images: the batch norms are folded into
    /// the convolutions).
    fn run(
        &self,
        range: std::ops::Range<usize>,
        out: &mut [f32],
        stopped: &(dyn Fn() -> bool + Sync),
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), Error> {
        let DevicePass { dataset, model, on, decoders, batch_size, limit } = *self;
        let (backbone, device) = (&on.backbone, &on.device);
        let items = &dataset.items[range];
        let transform = model.transform();
        let (n, dim, px) = (items.len(), model.arch.feature_dim(), transform.len());
        let batches = n.div_ceil(batch_size);
        let threads = decoders.clamp(1, batches.max(1));
        let limit = device_memory::Limit::on(device, limit)?;
        let mut chunk = batch_size.min(on.fits.load(Ordering::Relaxed));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<(), Error> {
            // Decoder `t` prepares batches t, t + threads, t + 2 * threads, ... and
            // hands each over a channel of capacity 1; the forward pass takes them
            // round-robin, so in data order with no reorder buffer. Memory stays
            // flat: at most 2 batches a decoder (one waiting, one being built)
            // plus the one in the backbone. The first error in data order is the
            // one reported, whatever the threads' timing.
            let mut receivers = Vec::with_capacity(threads);
            for t in 0..threads {
                let (tx, rx) = mpsc::sync_channel::<Result<Vec<f32>, Error>>(1);
                receivers.push(rx);
                let (stop, transform) = (&stop, &transform);
                scope.spawn(move || {
                    for b in (t..batches).step_by(threads) {
                        if stop.load(Ordering::Relaxed) || stopped() {
                            return;
                        }
                        let items = &items[b * batch_size..((b + 1) * batch_size).min(n)];
                        let mut pixels = vec![0f32; items.len() * px];
                        let result = items.iter().zip(pixels.chunks_mut(px)).try_for_each(|(item, out)| {
                            decode(dataset, &item.source).map(|img| preprocess(&img, transform, out))
                        });
                        let failed = result.is_err();
                        // A closed channel means the pass stopped: nothing more is wanted.
                        if tx.send(result.map(|()| pixels)).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            let size = transform.size;
            let mut forward = |b: usize, pixels: Vec<f32>| -> Result<(), Error> {
                let count = pixels.len() / px;
                let out = &mut out[b * batch_size * dim..][..count * dim];
                let mut start = 0;
                while start < count {
                    let take = chunk.min(count - start);
                    let run = || -> Result<Vec<f32>, Error> {
                        limit.check(model, take)?;
                        let xs = Tensor::from_slice(&pixels[start * px..][..take * px], (take, 3, size, size), device)?;
                        Ok(backbone.forward(&xs)?.flatten_all()?.to_vec1()?)
                    };
                    match run() {
                        Ok(feats) => {
                            out[start * dim..][..take * dim].copy_from_slice(&feats);
                            start += take;
                        }
                        Err(e) if take > 1 && device_memory::is_out_of_memory(&e) => {
                            chunk = take / 2;
                            on.fits.fetch_min(chunk, Ordering::Relaxed);
                            tracing::warn!(
                                "{}: out of memory with a backbone batch of {take} images: going on with {chunk}",
                                device_name(device)
                            );
                        }
                        Err(e) if device_memory::is_out_of_memory(&e) => {
                            return Err(Error::Device(format!(
                                "{}: out of memory with a backbone batch of one image ({e}): \
                                 free the device or use a smaller image_size",
                                device_name(device)
                            )))
                        }
                        Err(e) => return Err(e),
                    }
                }
                check_finite(out, &items[b * batch_size..][..count], model.dtype)?;
                progress(((b + 1) * batch_size).min(n));
                Ok(())
            };
            let mut result = Ok(());
            for b in 0..batches {
                if stopped() {
                    break;
                }
                let batch = receivers[b % threads].recv().expect("a decoder sends each of its batches or an error");
                result = batch.and_then(|pixels| forward(b, pixels));
                if result.is_err() {
                    // Decoders finish the batch in hand, then find the flag or a closed channel and stop.
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
            drop(receivers);
            result
        })
    }
}

/// `cpu`, `cuda:0`: a device as the command line names it.
fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

/// Refuses a batch whose features hold NaN or infinity, naming the first
/// image at fault: such features would train a head at chance accuracy and
/// end in a "done" job. (The weights are checked when loaded, so this is an
/// overflow, typically of a half-precision pass.)
fn check_finite(feats: &[f32], items: &[Item], dtype: DType) -> Result<(), Error> {
    let dim = feats.len() / items.len().max(1);
    for (row, item) in feats.chunks(dim.max(1)).zip(items) {
        let bad = row.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            let hint = match dtype {
                DType::F16 => "; the f16 pass overflowed: try dtype bf16 or f32",
                DType::BF16 | DType::F32 => "; the backbone's activations overflowed",
            };
            let image = match &item.source {
                Source::File(path) => path.display().to_string(),
                Source::Synthetic { index } => format!("synthetic image {index}"),
            };
            return Err(Error::Features {
                image,
                message: format!("{bad} of its {dim} features are NaN or infinite{hint}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Arch;
    use crate::data::SyntheticConfig;

    fn model() -> ModelConfig {
        ModelConfig {
            arch: Arch::Resnet18,
            weights: Weights::Random { seed: 0 },
            image_size: 32,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: crate::ChannelOrder::Rgb,
            dtype: DType::F32,
            feature_dtype: crate::FeatureDType::F32,
        }
    }

    fn no_progress(_: usize) {}

    /// `n` generated images written as PNG files, and the data set listing them.
    fn files(dir: &Path, n: usize) -> Dataset {
        let cfg = SyntheticConfig { classes: 2, images: n, width: 40, height: 36, seed: 3 };
        let items = (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                synthetic_image(&cfg, i).save(&path).expect("write a png");
                Item { source: Source::File(path), label: (i % 2) as u32 }
            })
            .collect();
        Dataset { classes: vec!["a".into(), "b".into()], items, synthetic: None }
    }

    #[test]
    fn workers_change_speed_not_results() {
        let cfg = SyntheticConfig { classes: 3, images: 7, width: 40, height: 36, seed: 1 };
        let dataset = crate::load_dataset(&crate::DataConfig {
            layout: crate::Layout::Synthetic(cfg),
            valid_fraction: 0.2,
            split_seed: 0,
            skip_bad_images: false,
            split_method: crate::SplitMethod::Shuffle,
        })
        .unwrap();
        let backbone = [OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)];
        let one = run_backbone(&dataset, &model(), &backbone, 1, 2, None, &no_progress).unwrap();
        let three = run_backbone(&dataset, &model(), &backbone, 3, 2, None, &no_progress).unwrap();
        assert_eq!(one.len(), 7 * 512);
        assert_eq!(one, three);
        // Each image's features land in its own row: the last image alone gives the last row.
        let last = Dataset { items: dataset.items[6..].to_vec(), ..dataset.clone() };
        let alone = run_backbone(&last, &model(), &backbone, 1, 2, None, &no_progress).unwrap();
        let row = &one[6 * 512..];
        assert!(row.iter().zip(&alone).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + a.abs())));
    }

    fn synthetic(images: usize) -> Dataset {
        let cfg = SyntheticConfig { classes: 3, images, width: 40, height: 36, seed: 1 };
        crate::load_dataset(&crate::DataConfig {
            layout: crate::Layout::Synthetic(cfg),
            valid_fraction: 0.2,
            split_seed: 0,
            skip_bad_images: false,
            split_method: crate::SplitMethod::Shuffle,
        })
        .unwrap()
    }

    /// Issue 17: `--device a,b` splits the pass into runs of whole batches,
    /// one per device; the features are those of one device, and progress
    /// counts every image once.
    #[test]
    fn devices_split_the_pass_not_its_results() {
        let dataset = synthetic(11);
        let one = [OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)];
        let alone = run_backbone(&dataset, &model(), &one, 2, 2, None, &no_progress).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |done: usize| seen.lock().unwrap().push(done);
        for devices in [2, 3, 8] {
            let many: Vec<_> = (0..devices)
                .map(|_| OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu))
                .collect();
            seen.lock().unwrap().clear();
            let split = run_backbone(&dataset, &model(), &many, 2, 2, None, &progress).unwrap();
            assert_eq!(split, alone, "{devices} devices");
            let seen = seen.lock().unwrap();
            assert_eq!(seen.iter().max(), Some(&11), "{devices} devices: {seen:?}");
        }
        let none = Dataset { items: Vec::new(), ..dataset.clone() };
        assert!(run_backbone(&none, &model(), &one, 2, 2, None, &no_progress).unwrap().is_empty());
        // The first bad image in data order is the one reported, whichever device finds it first.
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 9);
        std::fs::write(dir.path().join("7.png"), b"not an image").unwrap();
        std::fs::write(dir.path().join("2.png"), b"not an image").unwrap();
        let two: Vec<_> =
            (0..2).map(|_| OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)).collect();
        let err = run_backbone(&dataset, &model(), &two, 2, 2, None, &no_progress).unwrap_err();
        assert!(matches!(&err, Error::Image { path, .. } if path.ends_with("2.png")), "{err}");
    }

    /// Issue 17: a batch the device has no memory for (here a forced limit of
    /// 5 images' activations) is run in halves, the halved size kept, and
    /// the features are those of the whole batches; a limit below one image
    /// is an error that says so.
    #[test]
    fn out_of_memory_halves_the_batch_and_goes_on() {
        let dataset = synthetic(13);
        let backbone = [OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)];
        let whole = run_backbone(&dataset, &model(), &backbone, 2, 8, None, &no_progress).unwrap();
        let limit = device_memory::batch_bytes(&model(), 5);
        assert_eq!(backbone[0].fits.load(Ordering::Relaxed), usize::MAX);
        let halved = run_backbone(&dataset, &model(), &backbone, 2, 8, Some(limit), &no_progress).unwrap();
        // The device's next pass (a sharded pass's next shard) starts at the halved size.
        assert_eq!(backbone[0].fits.load(Ordering::Relaxed), 4);
        assert_eq!(halved.len(), whole.len());
        for (a, b) in halved.iter().zip(&whole) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} against {b}");
        }
        let tiny = device_memory::batch_bytes(&model(), 1) - 1;
        let err = run_backbone(&dataset, &model(), &backbone, 2, 8, Some(tiny), &no_progress).unwrap_err().to_string();
        assert!(err.starts_with("cpu: out of memory with a backbone batch of one image ("), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    /// Issue 17: an entry is stored streamed from its parts and read back
    /// mapped, bit for bit; a flipped byte fails its checksum, and an entry
    /// replaced by rename leaves a mapped reader with the old features.
    #[test]
    fn an_entry_is_mapped_and_checked_and_survives_a_rename_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let key = "0123456789abcdef0123456789abcdef";
        let (a, b): (Vec<f32>, Vec<f32>) = ((0..6).map(|i| i as f32 * 0.5).collect(), vec![-1.0, f32::MIN_POSITIVE]);
        let f32 = FeatureDType::F32;
        cache.store(key, 4, 2, f32, [&a, &b]).unwrap();
        assert!(cache
            .store(key, 5, 2, f32, [&a, &b])
            .unwrap_err()
            .to_string()
            .ends_with("8 floats were written for 5 rows of 2"));
        let loaded = cache.load(key).unwrap().unwrap();
        assert!(loaded.is_mapped());
        assert_eq!(loaded.dims(), (4, 2));
        assert_eq!(
            loaded.to_tensor().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [&a[..], &b[..]].concat()
        );
        let mut row = Vec::new();
        loaded.extend_row(3, &mut row);
        assert_eq!(row, [-1.0, f32::MIN_POSITIVE]);
        assert_eq!(loaded.gather(&[3, 0]).unwrap().to_vec2::<f32>().unwrap(), [[-1.0, f32::MIN_POSITIVE], [0.0, 0.5]]);
        // The same file Candle's reader understands (safetensors, the data aligned).
        let tensors = candle_core::safetensors::load(cache.path(key), &Device::Cpu).unwrap();
        assert_eq!(
            tensors["features"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            loaded.to_tensor().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // Rewritten by rename: the mapped reader keeps what it checked.
        cache.store(key, 4, 2, f32, [[7.0; 8]]).unwrap();
        assert_eq!(
            loaded.to_tensor().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [&a[..], &b[..]].concat()
        );
        assert_eq!(
            cache.load(key).unwrap().unwrap().to_tensor().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [7.0; 8]
        );
        // f16: half the bytes, rounded to nearest, mapped, converted when gathered.
        let half_key = "fedcba9876543210fedcba9876543210";
        cache.store(half_key, 4, 2, FeatureDType::F16, [&a, &b]).unwrap();
        let halves = cache.load(half_key).unwrap().unwrap();
        assert!(halves.is_mapped() && halves.dtype() == FeatureDType::F16);
        assert!(matches!(halves.view(), FeatureSlice::F16(h) if h.len() == 8));
        assert_eq!(
            std::fs::metadata(cache.path(half_key)).unwrap().len() - 8 * 2,
            std::fs::metadata(cache.path(key)).unwrap().len() - 8 * 4
        );
        let got = halves.to_tensor().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -1.0, half::f16::from_f32(f32::MIN_POSITIVE).to_f32()]);
        // A flipped bit in the data is caught.
        let mut bytes = std::fs::read(cache.path(key)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(cache.path(key), bytes).unwrap();
        assert_eq!(cache.load(key).unwrap_err(), "its checksum does not match its contents");
    }

    /// Issue 17: a head trained on f16 features mapped from the cache (rows
    /// converted a batch at a time) is the head trained on the same values
    /// as f32, bit for bit: the conversion is exact and the steps the same.
    #[test]
    fn f16_features_train_the_same_head_as_their_f32_values() {
        struct Reports(Vec<crate::EpochReport>, Vec<Vec<f32>>);
        impl crate::EpochSink for Reports {
            fn epoch(
                &mut self,
                report: &crate::EpochReport,
                state: &crate::TrainState,
            ) -> Result<(), crate::SinkError> {
                self.0.push(crate::EpochReport { seconds: 0.0, ..report.clone() });
                self.1.push(state.weight.flatten_all().unwrap().to_vec1().unwrap());
                Ok(())
            }
        }
        let (n, dim, classes) = (300, 24, 3);
        let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
        // Values an f16 holds exactly (multiples of 1/64 below 4), with a class signal.
        let floats: Vec<f32> = (0..n * dim)
            .map(|k| (k * 7919 % 97) as f32 / 64.0 + if k % dim == labels[k / dim] as usize { 1.0 } else { 0.0 })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let key = "00112233445566778899aabbccddeeff";
        cache.store(key, n, dim, FeatureDType::F16, [&floats]).unwrap();
        let halves = cache.load(key).unwrap().unwrap();
        assert_eq!(halves.dtype(), FeatureDType::F16);
        let split = crate::split(n, 0.2, 0).unwrap();
        let cfg = crate::TrainConfig {
            batch_size: 16,
            lr: 0.05,
            momentum: 0.9,
            epochs: 3,
            weight_decay: 1e-4,
            step_size: 2,
            gamma: 0.5,
            seed: 1,
            loss: crate::Loss::CrossEntropy,
        };
        let run = |features: &FeatureMatrix| {
            let mut sink = Reports(Vec::new(), Vec::new());
            let job = crate::TrainJob {
                features,
                labels: &labels,
                classes,
                split: &split,
                config: &cfg,
                resume: None,
                device: &Device::Cpu,
            };
            crate::train(job, &mut sink).unwrap();
            (sink.0, sink.1)
        };
        let f32s = FeatureMatrix::from_vec(floats.clone(), n, dim).unwrap();
        let (want, want_weights) = run(&f32s);
        let (got, got_weights) = run(&halves);
        assert_eq!(got, want);
        assert_eq!(got_weights, want_weights);
        assert!(want.last().unwrap().valid_acc > 0.9, "{want:?}");
    }

    #[test]
    fn every_bad_image_is_reported_before_the_pass_and_nothing_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 9);
        std::fs::write(dir.path().join("7.png"), b"not an image").unwrap();
        let bytes = std::fs::read(dir.path().join("4.png")).unwrap();
        std::fs::write(dir.path().join("4.png"), &bytes[..bytes.len() / 2]).unwrap();
        let cache = FeatureCache::new(dir.path().join("cache"));
        for workers in [1, 3] {
            let progress = |_: usize| panic!("no image reaches the backbone");
            let err = compute_features(&dataset, &model(), &cache, workers, 2, &Device::Cpu, &progress).unwrap_err();
            let Error::BadImages(bad) = &err else { panic!("{err}") };
            let paths: Vec<&Path> = bad.images.iter().map(|b| b.path.as_path()).collect();
            assert_eq!(paths, [dir.path().join("4.png"), dir.path().join("7.png")]);
            assert!(err.to_string().starts_with("2 of 9 images cannot be decoded:\n"), "{err}");
        }
        assert!(!cache.path(&cache_key(&dataset, &model()).unwrap()).exists(), "a failed pass writes no cache entry");
    }

    #[test]
    fn in_the_pass_the_first_bad_image_in_data_order_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 9);
        // Item 7 is corrupt and item 4 truncated: with 3 decoders and batches of 2,
        // batch 3 (item 7) is a different decoder's than batch 2 (item 4).
        std::fs::write(dir.path().join("7.png"), b"not an image").unwrap();
        let bytes = std::fs::read(dir.path().join("4.png")).unwrap();
        std::fs::write(dir.path().join("4.png"), &bytes[..bytes.len() / 2]).unwrap();
        let backbone = [OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)];
        for workers in [1, 3] {
            let err = run_backbone(&dataset, &model(), &backbone, workers, 2, None, &no_progress).unwrap_err();
            let message = err.to_string();
            assert!(matches!(&err, Error::Image { path, .. } if path.ends_with("4.png")), "{message}");
            assert!(message.starts_with(&format!("{}: cannot decode image: ", dir.path().join("4.png").display())));
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn an_image_removed_after_listing_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 3);
        std::fs::remove_file(dir.path().join("2.png")).unwrap();
        let backbone = [OnDevice::new(Backbone::load(&model(), &Device::Cpu).unwrap(), Device::Cpu)];
        let err = run_backbone(&dataset, &model(), &backbone, 2, 1, None, &no_progress).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}: cannot decode image: cannot read: ", dir.path().join("2.png").display()))
        );
    }

    /// Issue 16a: the first half of a JPEG decoded without a word (its
    /// missing rows grey) and trained; Pillow refuses it, and so does sweep.
    #[test]
    fn a_truncated_jpeg_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SyntheticConfig { classes: 2, images: 2, width: 64, height: 48, seed: 5 };
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&synthetic_image(&cfg, 0))
            .unwrap();
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        assert_eq!(decode_image(&whole).unwrap().dimensions(), (64, 48));
        let half = dir.path().join("half.jpg");
        std::fs::write(&half, &jpeg[..jpeg.len() / 2]).unwrap();
        let message = decode_image(&half).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: cannot decode image: truncated: the file ends (after {} bytes) before the JPEG's end-of-image marker",
                half.display(),
                jpeg.len() / 2
            )
        );
        // A PNG cut short likewise.
        let png = dir.path().join("cut.png");
        synthetic_image(&cfg, 1).save(&png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        std::fs::write(&png, &bytes[..bytes.len() - 12]).unwrap();
        let message = decode_image(&png).unwrap_err().to_string();
        assert!(message.starts_with(&format!("{}: cannot decode image: truncated: ", png.display())), "{message}");
    }

    #[test]
    fn decode_image_reads_by_content_and_drops_alpha() {
        let dir = tempfile::tempdir().unwrap();
        // A PNG named .jpg decodes by its bytes, as PIL does.
        let rgba = image::RgbaImage::from_fn(5, 4, |x, y| image::Rgba([x as u8 * 50, y as u8 * 60, 7, 3]));
        let path = dir.path().join("x.jpg");
        rgba.save_with_format(&path, image::ImageFormat::Png).unwrap();
        let rgb = decode_image(&path).unwrap();
        assert_eq!(rgb.dimensions(), (5, 4));
        assert_eq!(rgb.get_pixel(3, 2).0, [150, 120, 7]);
        let grey = image::GrayImage::from_fn(3, 3, |x, _| image::Luma([x as u8 * 100]));
        let path = dir.path().join("g.png");
        grey.save(&path).unwrap();
        assert_eq!(decode_image(&path).unwrap().get_pixel(2, 0).0, [200, 200, 200]);
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert!(decode_image(&empty).unwrap_err().to_string().starts_with(&empty.display().to_string()));
    }

    /// Issue 16c: NaN features trained a head at chance accuracy and a
    /// "done" job. Each batch is checked; the error names the image.
    #[test]
    fn non_finite_features_are_an_error_naming_the_image() {
        let items: Vec<Item> = ["a.jpg", "b.jpg", "c.jpg"]
            .iter()
            .map(|name| Item { source: Source::File(PathBuf::from("data").join(name)), label: 0 })
            .collect();
        let mut feats = vec![0.5f32; 3 * 4];
        assert!(check_finite(&feats, &items, DType::F32).is_ok());
        feats[4 + 1] = f32::NAN;
        feats[4 + 3] = f32::INFINITY;
        feats[8] = f32::NAN;
        let err = check_finite(&feats, &items, DType::F16).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: 2 of its 4 features are NaN or infinite; the f16 pass overflowed: try dtype bf16 or f32",
                Path::new("data").join("b.jpg").display()
            )
        );
        let synthetic = [Item { source: Source::Synthetic { index: 12 }, label: 0 }];
        let err = check_finite(&[f32::NAN], &synthetic, DType::F32).unwrap_err().to_string();
        assert_eq!(
            err,
            "synthetic image 12: 1 of its 1 features are NaN or infinite; the backbone's activations overflowed"
        );
    }

    /// The same end to end: finite weights, positive and large enough to
    /// overflow f32, give infinite features (positive, so no `inf - inf`
    /// NaN that a ReLU would turn into 0); the pass fails on the first image
    /// and caches nothing.
    #[test]
    fn a_pass_that_overflows_fails_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 3);
        let mut tensors = crate::random_weights(Arch::Resnet18, 0).unwrap();
        for t in tensors.values_mut() {
            if t.rank() == 4 {
                *t = (t.abs().unwrap() * 1e6).unwrap();
            }
        }
        let path = dir.path().join("huge.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let cfg = ModelConfig { weights: Weights::Safetensors(path), ..model() };
        let cache = FeatureCache::new(dir.path().join("cache"));
        let err = compute_features(&dataset, &cfg, &cache, 1, 2, &Device::Cpu, &no_progress).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Features { .. }), "{message}");
        assert!(message.starts_with(&format!("{}: ", dir.path().join("0.png").display())), "{message}");
        assert!(message.contains("features are NaN or infinite"), "{message}");
        assert!(!cache.path(&cache_key(&dataset, &cfg).unwrap()).exists());
    }

    /// Issue 16e: a killed run left `KEY.tmpPID` files in the cache forever.
    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let key = "0123456789abcdef0123456789abcdef";
        let dead = dir.path().join(format!("{key}.tmp999999999")); // above any Linux pid_max
        let mine = dir.path().join(format!("{key}.tmp{}", std::process::id()));
        let others = ["notes.tmp12", &format!("{key}.safetensors"), &format!("{key}.tmp12x")];
        for path in [&dead, &mine] {
            std::fs::write(path, b"half an entry").unwrap();
        }
        for name in others {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(temporary_pid(&format!("{key}.tmp42")), Some(42));
        assert_eq!(temporary_pid("abc.tmp42"), None);
        let removed = cache.remove_stale_temporaries();
        if cfg!(target_os = "linux") {
            assert_eq!(removed, 1);
            assert!(!dead.exists(), "the dead process's temporary is removed");
        } else {
            assert_eq!(removed, 0, "a fresh temporary stays where liveness is unknown");
        }
        assert!(mine.exists(), "a live process's temporary stays");
        for name in others {
            assert!(dir.path().join(name).exists(), "{name} is not a temporary");
        }
        // compute_features cleans up first thing.
        std::fs::write(&dead, b"half an entry").unwrap();
        let _ = compute_features(&files(dir.path(), 2), &model(), &cache, 1, 2, &Device::Cpu, &no_progress);
        assert_eq!(!dead.exists(), cfg!(target_os = "linux"));
    }

    /// Issue 16f: a `--cache-dir` that is a file failed the run only after
    /// the whole backbone pass. It fails before any image is decoded.
    #[test]
    fn a_cache_that_cannot_take_the_entry_fails_before_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = files(dir.path(), 3);
        let file = dir.path().join("cache-is-a-file");
        std::fs::write(&file, b"").unwrap();
        let progress = |_: usize| panic!("no image reaches the backbone");
        let err = compute_features(&dataset, &model(), &FeatureCache::new(&file), 1, 2, &Device::Cpu, &progress)
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("feature cache {}: not a folder", file.display()));
        let under_file = FeatureCache::new(file.join("sub"));
        let err = under_file.prepare(1).unwrap_err().to_string();
        assert!(err.starts_with(&format!("feature cache {}: cannot create the folder: ", file.join("sub").display())));
        // A folder is created, and the probe leaves nothing behind.
        let fresh = FeatureCache::new(dir.path().join("a/b"));
        fresh.prepare(1).unwrap();
        assert_eq!(std::fs::read_dir(fresh.dir()).unwrap().count(), 0);
        if cfg!(unix) {
            let err = fresh.prepare(u64::MAX).unwrap_err().to_string();
            let want = format!("feature cache {}: the features need 16777216.0 TiB but only ", fresh.dir().display());
            assert!(err.starts_with(&want) && err.ends_with(" are free"), "{err}");
        }
        assert_eq!(human_bytes(300), "300 bytes");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
