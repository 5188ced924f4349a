//! The backbone pass, computed once: images are decoded and preprocessed by
//! `workers` threads, batched, run through the frozen backbone and stored in
//! a content-addressed cache that every job of every sweep on the same images,
//! transform and weights reads instead of running the backbone again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use candle_core::{Device, Tensor};

use crate::backbone::{Backbone, ModelConfig, Weights};
use crate::data::{Dataset, Source};
use crate::preprocess::{preprocess, Transform};
use crate::synthetic::synthetic_image;
use crate::Error;

/// Bumped whenever what a cache entry holds, or how it is computed, changes.
const CACHE_FORMAT: &str = "sweep-features-v1";

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
    /// `[N, D]` f32 on the CPU, in data-set order.
    pub data: Tensor,
    /// The cache key: a hash of images, transform, backbone and weights.
    pub key: String,
    /// Whether the backbone ran.
    pub outcome: CacheOutcome,
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

    fn load(&self, key: &str) -> Result<Option<Tensor>, String> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read: {e}")),
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("key").map(String::as_str) != Some(key) {
            return Err("its key does not match its name".to_owned());
        }
        let view = st.tensor("features").map_err(|e| e.to_string())?;
        let checksum = blake3::hash(view.data()).to_hex().to_string();
        if meta.get("checksum") != Some(&checksum) {
            return Err("its checksum does not match its contents".to_owned());
        }
        let tensor = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| e.to_string())?;
        Ok(Some(tensor))
    }

    fn store(&self, key: &str, features: &Tensor) -> Result<(), Error> {
        let path = self.path(key);
        let err = |message: String| Error::Cache { path: path.clone(), message };
        std::fs::create_dir_all(&self.dir).map_err(|e| err(format!("cannot create the folder: {e}")))?;
        let raw: Vec<f32> = features.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = raw.iter().flat_map(|x| x.to_le_bytes()).collect();
        let meta = HashMap::from([
            ("key".to_owned(), key.to_owned()),
            ("checksum".to_owned(), blake3::hash(&bytes).to_hex().to_string()),
            ("format".to_owned(), CACHE_FORMAT.to_owned()),
        ]);
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, features.dims().to_vec(), &bytes)
            .map_err(|e| err(e.to_string()))?;
        let out = safetensors::serialize([("features", view)], Some(meta)).map_err(|e| err(e.to_string()))?;
        // Write beside, then rename: a reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, out).map_err(|e| err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("cannot rename into place: {e}")))?;
        Ok(())
    }
}

/// The cache key of a data set under a model: BLAKE3 over the cache format,
/// the backbone, the weights' bytes, the transform and every image's bytes.
fn cache_key(dataset: &Dataset, model: &ModelConfig) -> Result<String, Error> {
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
    if let Some(cfg) = &dataset.synthetic {
        h.update(format!("synthetic:{cfg:?}").as_bytes());
    }
    for item in &dataset.items {
        match &item.source {
            Source::File(path) => {
                let digest = hash_file(path).map_err(|message| Error::Image { path: path.clone(), message })?;
                h.update(digest.as_bytes());
            }
            Source::Synthetic { index } => {
                h.update(&(*index as u64).to_le_bytes());
            }
        }
    }
    Ok(h.finalize().to_hex()[..32].to_owned())
}

fn hash_file(path: &Path) -> Result<blake3::Hash, String> {
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

/// Decodes one image to RGB.
fn decode(dataset: &Dataset, source: &Source) -> Result<image::RgbImage, Error> {
    match source {
        Source::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Image { path: path.clone(), message: format!("cannot read: {e}") })?;
            let img = image::load_from_memory(&bytes)
                .map_err(|e| Error::Image { path: path.clone(), message: e.to_string() })?;
            Ok(img.to_rgb8())
        }
        Source::Synthetic { index } => {
            let cfg = dataset.synthetic.as_ref().expect("synthetic items come from a synthetic data set");
            Ok(synthetic_image(cfg, *index))
        }
    }
}

/// Returns the data set's features, from the cache when it holds them, else
/// by one streaming backbone pass (decode, batch, forward, store), after which
/// the cache holds them.
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
    let outcome = match cache.load(&key) {
        Ok(Some(data)) if data.dims() == [dataset.items.len(), model.arch.feature_dim()] => {
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
    let backbone = Backbone::load(model, device)?;
    let data = run_backbone(dataset, model, &backbone, workers, batch_size, device, progress)?;
    cache.store(&key, &data)?;
    tracing::info!(key, images = dataset.items.len(), "features computed and cached");
    Ok(Features { data, key, outcome })
}

fn run_backbone(
    dataset: &Dataset,
    model: &ModelConfig,
    backbone: &Backbone,
    workers: usize,
    batch_size: usize,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Tensor, Error> {
    let transform = Transform { size: model.image_size, mean: model.mean, std: model.std };
    let n = dataset.items.len();
    let dim = backbone.arch().feature_dim();
    let batch_size = batch_size.max(1);
    let batches = n.div_ceil(batch_size);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let threads = workers.max(1);
    let mut out = vec![0f32; n * dim];
    std::thread::scope(|scope| -> Result<(), Error> {
        // Bounded: at most `threads` decoded batches wait, so memory stays flat.
        let (tx, rx) = mpsc::sync_channel::<Result<(usize, Vec<f32>), Error>>(threads);
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, transform) = (&next, &stop, &transform);
            scope.spawn(move || loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches || stop.load(Ordering::Relaxed) {
                    return;
                }
                let items = &dataset.items[b * batch_size..((b + 1) * batch_size).min(n)];
                let mut pixels = vec![0f32; items.len() * transform.len()];
                let result = items.iter().zip(pixels.chunks_mut(transform.len())).try_for_each(|(item, out)| {
                    decode(dataset, &item.source).map(|img| preprocess(&img, transform, out))
                });
                let failed = result.is_err();
                if tx.send(result.map(|()| (b, pixels))).is_err() || failed {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut done = 0;
        for _ in 0..batches {
            let (b, pixels) = match rx.recv().expect("a decoder sends before it stops") {
                Ok(batch) => batch,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            pending.insert(b, pixels);
            while let Some(pixels) = pending.remove(&done) {
                let count = pixels.len() / transform.len();
                let xs = Tensor::from_vec(pixels, (count, 3, transform.size, transform.size), device)?;
                let feats: Vec<f32> = backbone.forward(&xs)?.flatten_all()?.to_vec1()?;
                out[done * batch_size * dim..][..count * dim].copy_from_slice(&feats);
                done += 1;
                progress((done * batch_size).min(n));
            }
        }
        Ok(())
    })?;
    Ok(Tensor::from_vec(out, (n, dim), &Device::Cpu)?)
}
