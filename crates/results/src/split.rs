//! The split a sweep's last run used, as its `split_json` records it: sizes,
//! folds, how it was made and its hash (equal splits, equal hash).

use sweep_store::SweepRow;

/// A sweep's recorded split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitInfo {
    /// Training images (of the first fold, with folds).
    pub train: u64,
    /// Validation images (of the first fold, with folds).
    pub valid: u64,
    /// The number of folds, if any.
    pub folds: Option<u64>,
    /// How it was made: `shuffle, seed N`, `pandas, seed N` or `file PATH`.
    pub method: String,
    /// A hash of the valid sets.
    pub hash: String,
    /// The record as stored, without the list of skipped images.
    pub json: serde_json::Value,
}

impl SplitInfo {
    /// The split `sweep` recorded, once a run has made it.
    pub fn of(sweep: &SweepRow) -> Option<SplitInfo> {
        let mut json: serde_json::Value = serde_json::from_str(sweep.split_json.as_deref()?).ok()?;
        if let Some(map) = json.as_object_mut() {
            map.remove("skipped");
        }
        let seed = json.get("seed").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let method = match (json.get("file").and_then(|f| f.as_str()), json.get("method").and_then(|m| m.as_str())) {
            (Some(file), _) => format!("file {file}"),
            (None, Some(method)) => format!("{method}, seed {seed}"),
            (None, None) => format!("shuffle, seed {seed}"),
        };
        Some(SplitInfo {
            train: json.get("train")?.as_u64()?,
            valid: json.get("valid")?.as_u64()?,
            folds: json.get("folds").and_then(serde_json::Value::as_u64),
            method,
            hash: json.get("hash")?.as_str()?.to_owned(),
            json,
        })
    }

    /// `9 train, 3 valid` or `5 folds`, then how and the hash, in one line.
    pub fn line(&self) -> String {
        let sizes = match self.folds {
            Some(k) => format!("{k} folds (fold 0: {} train, {} valid)", self.train, self.valid),
            None => format!("{} train, {} valid", self.train, self.valid),
        };
        format!("split: {sizes} ({}), hash {}", self.method, self.hash)
    }

    /// The short form for a table cell: `9/3 HASH`, or `5 folds HASH`.
    pub fn cell(&self) -> String {
        match self.folds {
            Some(k) => format!("{k} folds {}", self.hash),
            None => format!("{}/{} {}", self.train, self.valid, self.hash),
        }
    }
}
