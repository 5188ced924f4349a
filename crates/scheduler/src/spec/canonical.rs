//! The canonical form of a sweep and of its jobs, and the ids hashed from it:
//! **where a job id is made**.
//!
//! A job id hashes the canonical JSON (sorted keys) of the sweep's `data` and
//! `model` sections *as written*, defaults filled in, and the job's resolved
//! train settings; key order, file format and number spelling (`1e-2` vs
//! `0.01`) do not change it. The sweep id hashes the whole canonical sweep,
//! name included. Users' databases hold these ids: a change here must leave
//! every id as it was: `canonical/tests.rs` checks the ids of a fixed set
//! of sweep files (`tests/fixtures/golden-ids/`) against the ones recorded.

use std::collections::BTreeMap;

use serde_json::json;
use sweep_worker::Layout;

use super::check::Sections;
use super::keys::{Param, TrainKey, TrainParams};
use super::SweepSpec;

#[cfg(test)]
mod tests;

/// The canonical JSON of `data` and `model` as written (paths unresolved),
/// defaults filled in: the part of every job id that is not hyperparameters.
pub(super) fn environment(s: &Sections) -> serde_json::Value {
    let mut data = BTreeMap::new();
    match &s.data.layout {
        Layout::Kaggle { .. } | Layout::Folder { .. } => {
            data.insert("root", json!(s.root));
        }
        Layout::Synthetic(c) => {
            data.insert("classes", json!(c.classes));
            data.insert("images", json!(c.images));
            data.insert("width", json!(c.width));
            data.insert("height", json!(c.height));
            data.insert("seed", json!(c.seed));
        }
    }
    data.insert("layout", json!(s.data.layout.name()));
    data.insert("valid_fraction", json!(s.data.valid_fraction));
    data.insert("split_seed", json!(s.data.split_seed));
    if let Some(k) = s.folds {
        data.insert("folds", json!(k));
    }
    // Only when set: the ids of every file without it stay as they were.
    if s.data.skip_bad_images {
        data.insert("skip_bad_images", json!(true));
    }
    // Issue 18, the same way: a split file (as written), pandas' split.
    if let Some(split) = &s.split {
        data.insert("split", json!(split));
    }
    if s.data.split_method == sweep_worker::SplitMethod::Pandas {
        data.insert("split_method", json!("pandas"));
    }
    let m = &s.model;
    let mut model = json!({
        "backbone": m.arch.name(),
        "weights": s.weights,
        "image_size": m.image_size,
        "mean": m.mean,
        "std": m.std,
        "dtype": m.dtype.name(),
    });
    if s.model_given.ignore_metadata {
        model["ignore_weights_metadata"] = json!(true);
    }
    // Only when not RGB: every RGB sweep keeps its ids. A preset is written
    // as the values it stands for, so it and the same values by hand give
    // the same ids.
    if m.channel_order != sweep_worker::ChannelOrder::Rgb {
        model["channel_order"] = json!(m.channel_order.name());
    }
    // Likewise: only f16 features enter the ids; every f32 sweep keeps its own.
    if m.feature_dtype != sweep_worker::FeatureDType::F32 {
        model["feature_dtype"] = json!(m.feature_dtype.name());
    }
    json!({ "data": data, "model": model })
}

/// The canonical JSON of the whole sweep: `environment`, the name, `[train]`
/// with its defaults, the grid and the configs.
pub(super) fn sweep(s: &Sections, environment: &serde_json::Value) -> serde_json::Value {
    let grid: BTreeMap<&str, Vec<serde_json::Value>> =
        s.grid.iter().map(|(k, vs)| (k.name(), vs.iter().map(|v| v.to_json()).collect())).collect();
    let configs: Vec<serde_json::Value> = s
        .configs
        .iter()
        .map(|c| {
            let map: BTreeMap<&str, serde_json::Value> = c.iter().map(|(k, v)| (k.name(), v.to_json())).collect();
            json!(map)
        })
        .collect();
    let mut sweep = json!({
        "name": s.name,
        "data": environment["data"],
        "model": environment["model"],
        "train": s.base.to_json(),
        "grid": grid,
        "configs": configs,
    });
    // Only what a search sets: a sweep without one keeps its id.
    if let serde_json::Value::Object(map) = &mut sweep {
        for (key, value) in super::space::canonical(&s.search, &s.sampled) {
            map.insert(key.to_owned(), value);
        }
        // Likewise `[prune]`: part of the sweep's id, never of a job's.
        if let Some(prune) = &s.prune {
            map.insert("prune".to_owned(), prune.canonical());
        }
    }
    sweep
}

/// 16 hex digits of BLAKE3 over the canonical text of `value`.
fn short_hash(value: &serde_json::Value) -> String {
    let hash = blake3::hash(to_canonical_string(value).as_bytes());
    hash.to_hex()[..16].to_owned()
}

/// `value` as compact JSON with every object's keys in sorted (byte) order.
///
/// The sort is explicit: serde_json's maps sort their keys only while its
/// `preserve_order` feature is off, and any crate of a build can turn it on
/// (then `json!` keeps insertion order, and every id would change). Without
/// the feature this is exactly `value.to_string()`, the text the ids were
/// first hashed from.
pub(super) fn to_canonical_string(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => write_object(out, map.iter().map(|(k, v)| (k.as_str(), v))),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An object's entries, whatever their order, sorted by key.
fn write_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a str, &'a serde_json::Value)>) {
    let mut entries: Vec<(&str, &serde_json::Value)> = entries.collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}

impl SweepSpec {
    /// The sweep's id: a hash of its canonical form (name included).
    pub fn id(&self) -> String {
        short_hash(&self.canonical)
    }

    /// The canonical JSON of the sweep, as the store records it.
    pub fn canonical_json(&self) -> String {
        to_canonical_string(&self.canonical)
    }

    /// The id of the job with these parameters in this sweep's data and model.
    pub fn job_id(&self, params: &TrainParams) -> String {
        short_hash(&json!({ "env": self.canonical_env, "train": params.to_json() }))
    }

    /// The canonical JSON of `data` and `model`, as written: the part of every
    /// job id that is not hyperparameters.
    pub fn environment_json(&self) -> &serde_json::Value {
        &self.canonical_env
    }
}

impl TrainParams {
    /// The canonical JSON object: every key, sorted.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map: BTreeMap<&str, serde_json::Value> =
            TrainKey::ALL.iter().map(|k| (k.name(), self.get(*k).to_json())).collect();
        if let Some(fold) = self.fold {
            map.insert("fold", json!(fold));
        }
        json!(map)
    }

    /// [`TrainParams::to_json`] as canonical text (keys sorted), as the
    /// store records a job's settings.
    pub fn canonical_json(&self) -> String {
        to_canonical_string(&self.to_json())
    }

    /// What a job's results depend on: [`TrainParams::canonical_json`]
    /// without the keys that only change speed. Jobs of a sweep with the
    /// same results key are trained once (`run.rs`).
    pub fn results_key(&self) -> String {
        let mut value = self.to_json();
        if let Some(map) = value.as_object_mut() {
            for key in TrainKey::ALL.into_iter().filter(|k| k.speed_only()) {
                map.remove(key.name());
            }
        }
        to_canonical_string(&value)
    }

    /// [`TrainParams::results_key`] without `epochs` too: jobs with the same
    /// one differ at most in how many epochs they run.
    pub fn results_key_without_epochs(&self) -> String {
        let mut value: serde_json::Value = serde_json::from_str(&self.results_key()).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove(TrainKey::Epochs.name());
        }
        to_canonical_string(&value)
    }
}

impl Param {
    /// The value as canonical JSON.
    pub(super) fn to_json(self) -> serde_json::Value {
        match self {
            Param::Int(i) => json!(i),
            Param::Float(x) => json!(x),
            Param::Choice(s) => json!(s),
        }
    }
}
