//! What is checked of a user's own data and weights without computing
//! anything: the data set and its labels, the split (a split file checked
//! whole), the weights file (readable, fitting the backbone, and what its
//! metadata declares), the cache folder. `sweep plan` runs these checks;
//! `sweep run` runs them (and the images' check) before it registers
//! anything. Also the split a recorded sweep used, for `sweep split`.

use std::path::{Path, PathBuf};

use sweep_store::Store;
use sweep_worker::{Dataset, FeatureCache, ModelInForce, Source, Split, SplitMethod};

use crate::run::Error;
use crate::spec::{Format, SweepSpec};

/// What the checks found.
#[derive(Debug)]
pub struct Checked {
    /// The data set, as listed (nothing decoded).
    pub dataset: Dataset,
    /// The `[model]` settings in force (the weights file's metadata applied).
    pub model: ModelInForce,
    /// The splits the jobs will use (one, or one per fold).
    pub splits: Vec<Split>,
}

impl Checked {
    /// One line on the split: sizes, how it is made, its hash.
    pub fn split_line(&self, spec: &SweepSpec) -> String {
        split_line(&self.splits, spec)
    }
}

/// The checks that need no computing, in the order a run meets them. The
/// images themselves are not read (`sweep run` checks each one).
pub fn check(spec: &SweepSpec) -> Result<Checked, Error> {
    let dataset = sweep_worker::load_dataset(&spec.data)?;
    let model = sweep_worker::model_in_force(&spec.model, spec.model_given)?;
    sweep_worker::check_weights(&model.model)?;
    let splits = sweep_worker::make_splits(&dataset, &spec.data, spec.folds, false)?;
    Ok(Checked { dataset, model, splits })
}

/// Checks that the feature cache folder could take `images` features of
/// `dim` values, without creating it: an existing folder takes a probe file
/// and must have the room; a missing one needs its nearest existing parent
/// to be a folder that takes a probe file.
pub fn check_cache_dir(dir: &Path, images: usize, dim: usize) -> Result<(), Error> {
    if dir.exists() {
        return Ok(FeatureCache::new(dir).prepare((images * dim * 4) as u64)?);
    }
    let parent = dir.ancestors().skip(1).find(|p| p.as_os_str().is_empty() || p.exists());
    let parent = match parent {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let err = |message: String| sweep_worker::Error::Cache { path: dir.to_owned(), message };
    if !parent.is_dir() {
        return Err(err(format!("cannot be created: {} is not a folder", parent.display())).into());
    }
    let probe = parent.join(format!(".sweep-probe-{}", std::process::id()));
    std::fs::write(&probe, b"sweep")
        .map_err(|e| err(format!("cannot be created: {} takes no new file: {e}", parent.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// One line on a split: sizes, how it is made, its hash.
pub(crate) fn split_line(splits: &[Split], spec: &SweepSpec) -> String {
    let how = match &spec.data.split_method {
        SplitMethod::File(path) => format!("from {}", path.display()),
        SplitMethod::Pandas => format!("pandas' sample, seed {}", spec.data.split_seed),
        SplitMethod::Shuffle => format!("seeded shuffle, seed {}", spec.data.split_seed),
    };
    let hash = sweep_worker::split_hash(splits);
    match splits {
        [one] => format!("split: {} train, {} valid ({how}), hash {hash}", one.train.len(), one.valid.len()),
        folds => {
            let sizes: Vec<String> = folds.iter().map(|s| s.valid.len().to_string()).collect();
            format!("split: {} folds, valid sizes {} ({how}), hash {hash}", folds.len(), sizes.join("/"))
        }
    }
}

/// The split a recorded sweep used: its images' ids, the splits, and
/// whether the sweep had folds.
#[derive(Debug)]
pub struct RecordedSplit {
    /// The sweep's id.
    pub sweep_id: String,
    /// Each image's id, in data set order.
    pub ids: Vec<String>,
    /// One split, or one per fold.
    pub splits: Vec<Split>,
    /// Whether the sweep has folds (the file then has a `fold` column).
    pub folds: bool,
}

/// Makes again the split that sweep `which` (the latest when `None`) of the
/// database `db` used, from its recorded sweep file and its data set (the
/// images it left out with `skip_bad_images` left out again), and checks it
/// against the split's recorded hash.
pub fn recorded_split(db: &sweep_store::Location, which: Option<&str>) -> Result<RecordedSplit, Error> {
    let store = Store::open_read_only(db)?;
    let row = store.find_sweep(which)?;
    let (Some(source), Some(path)) = (row.source.clone(), row.source_path.clone()) else {
        return Err(Error::NoSource(row.id));
    };
    let path = PathBuf::from(path);
    let format = if path.extension().is_some_and(|e| e == "json") { Format::Json } else { Format::Toml };
    let base = path.parent().unwrap_or(Path::new("."));
    let spec = SweepSpec::parse(&source, format, &path, base)?;
    let recorded: Option<serde_json::Value> = row.split_json.as_deref().and_then(|s| serde_json::from_str(s).ok());
    let mut dataset = sweep_worker::load_dataset(&spec.data)?;
    let skipped: Vec<PathBuf> = recorded
        .as_ref()
        .and_then(|v| v.get("skipped")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b.get("path")?.as_str().map(PathBuf::from))
        .collect();
    if !skipped.is_empty() {
        dataset.items.retain(|item| !matches!(&item.source, Source::File(p) if skipped.contains(p)));
    }
    let splits = sweep_worker::make_splits(&dataset, &spec.data, spec.folds, true)?;
    let hash = sweep_worker::split_hash(&splits);
    let want = recorded.as_ref().and_then(|v| v.get("hash")?.as_str().map(str::to_owned));
    match want {
        None => {
            return Err(Error::Split(format!(
                "sweep {} has no recorded split yet (its backbone pass never finished): run it first",
                row.id
            )))
        }
        Some(want) if want != hash => {
            return Err(Error::Split(format!(
                "the split made again from {} and its data differs from the one sweep {} recorded (hash {hash}, \
                 recorded {want}): the data set or the split file changed since",
                path.display(),
                row.id
            )))
        }
        Some(_) => {}
    }
    let ids = sweep_worker::item_ids(&dataset, &spec.data.layout);
    Ok(RecordedSplit { sweep_id: row.id, ids, splits, folds: spec.folds.is_some() })
}
