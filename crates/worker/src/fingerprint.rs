//! What a job's results depend on besides its settings: the images' bytes,
//! their labels, the weights and transform (all in the feature-cache key) and
//! the split. [`DataManifest`] lists them, and its [`data_key`](DataManifest::data_key)
//! binds jobs to them: the same sweep file over changed data is other jobs.
//! [`DataManifest::changes_from`] says what changed, in words.

use std::collections::HashMap;
use std::path::Path;

use crate::backbone::ModelConfig;
use crate::data::{DataConfig, Dataset, Layout, Source, Split};
use crate::features::{features_key, hash_file};
use crate::Error;

/// Bumped whenever what a data key covers changes.
const DATA_KEY_FORMAT: &str = "sweep-data-v1";

/// Everything a sweep's jobs train on, image by image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataManifest {
    /// The feature-cache key: images' bytes, backbone, weights, transform.
    pub features_key: String,
    /// A hash of the split (every fold's train and valid lists).
    pub split_hash: String,
    /// Each image: its name under the data root, its class, a hash of its bytes
    /// (empty for generated images).
    pub items: Vec<ManifestItem>,
}

/// One image of a [`DataManifest`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestItem {
    /// Its path under the data root (`train/abc.jpg`), or its index for generated images.
    pub id: String,
    /// Its class name.
    pub label: String,
    /// BLAKE3 of its bytes, 16 hex digits; empty for generated images.
    pub digest: String,
}

/// What differs between two manifests, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataChanges {
    /// Images in the new data set only.
    pub added: usize,
    /// Images in the old data set only.
    pub removed: usize,
    /// Images in both with another class.
    pub relabelled: usize,
    /// Images in both with other bytes.
    pub rewritten: usize,
    /// The same images and labels, but other features: the weights, backbone
    /// or transform changed.
    pub model: bool,
    /// The same images and labels, but another split.
    pub split: bool,
    /// A few of the changed images' names, for the message.
    pub examples: Vec<String>,
}

impl std::fmt::Display for DataChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let count = |n: usize, what: &str| format!("{n} image{} {what}", if n == 1 { "" } else { "s" });
        if self.added > 0 {
            parts.push(count(self.added, "added"));
        }
        if self.removed > 0 {
            parts.push(count(self.removed, "removed"));
        }
        if self.relabelled > 0 {
            parts.push(count(self.relabelled, "relabelled"));
        }
        if self.rewritten > 0 {
            parts.push(count(self.rewritten, "with other bytes"));
        }
        if self.model {
            parts.push("the weights, backbone or transform changed".to_owned());
        }
        if self.split {
            parts.push("the split changed".to_owned());
        }
        if parts.is_empty() {
            parts.push("the images' order changed".to_owned());
        }
        write!(f, "{}", parts.join(", "))?;
        if !self.examples.is_empty() {
            write!(f, " (e.g. {})", self.examples.join(", "))?;
        }
        Ok(())
    }
}

impl DataManifest {
    /// Lists a data set's images with a hash of each file's bytes (every file
    /// is read once), the feature-cache key under `model`, and the split.
    pub fn new(
        data: &DataConfig,
        dataset: &Dataset,
        model: &ModelConfig,
        splits: &[Split],
    ) -> Result<DataManifest, Error> {
        let root = match &data.layout {
            Layout::Kaggle { root } | Layout::Folder { root } => Some(root.as_path()),
            Layout::Synthetic(_) => None,
        };
        let mut digests = Vec::with_capacity(dataset.items.len());
        let mut items = Vec::with_capacity(dataset.items.len());
        for item in &dataset.items {
            let label = dataset.classes.get(item.label as usize).cloned().unwrap_or_default();
            let (id, digest) = match &item.source {
                Source::File(path) => {
                    let digest = hash_file(path).map_err(|message| Error::Image { path: path.clone(), message })?;
                    digests.push(digest);
                    (relative(root, path), digest.to_hex()[..16].to_owned())
                }
                Source::Synthetic { index } => (index.to_string(), String::new()),
            };
            items.push(ManifestItem { id, label, digest });
        }
        let features_key = features_key(dataset, model, &digests)?;
        let mut h = blake3::Hasher::new();
        for split in splits {
            h.update(format!("{:?}|{:?};", split.train, split.valid).as_bytes());
        }
        let split_hash = h.finalize().to_hex()[..16].to_owned();
        Ok(DataManifest { features_key, split_hash, items })
    }

    /// The data key: a hash of the features' key, every image's class and
    /// the split. Jobs recorded under one data key never continue under another.
    pub fn data_key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(DATA_KEY_FORMAT.as_bytes());
        h.update(self.features_key.as_bytes());
        h.update(self.split_hash.as_bytes());
        for item in &self.items {
            h.update(&(item.label.len() as u64).to_le_bytes());
            h.update(item.label.as_bytes());
        }
        h.finalize().to_hex()[..16].to_owned()
    }

    /// The manifest as JSON, as the store keeps it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a manifest serialises")
    }

    /// A manifest from [`to_json`](Self::to_json).
    pub fn from_json(json: &str) -> Result<DataManifest, String> {
        serde_json::from_str(json).map_err(|e| format!("a recorded data manifest is unreadable: {e}"))
    }

    /// What changed from `old` to `self`.
    pub fn changes_from(&self, old: &DataManifest) -> DataChanges {
        let before: HashMap<&str, &ManifestItem> = old.items.iter().map(|i| (i.id.as_str(), i)).collect();
        let after: HashMap<&str, &ManifestItem> = self.items.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut changes = DataChanges::default();
        let note = |changes: &mut DataChanges, what: String| {
            if changes.examples.len() < 3 {
                changes.examples.push(what);
            }
        };
        for item in &self.items {
            match before.get(item.id.as_str()) {
                None => {
                    changes.added += 1;
                    note(&mut changes, format!("{} added", item.id));
                }
                Some(was) => {
                    if was.label != item.label {
                        changes.relabelled += 1;
                        note(&mut changes, format!("{} {} → {}", item.id, was.label, item.label));
                    }
                    if was.digest != item.digest {
                        changes.rewritten += 1;
                        note(&mut changes, format!("{} rewritten", item.id));
                    }
                }
            }
        }
        for item in &old.items {
            if !after.contains_key(item.id.as_str()) {
                changes.removed += 1;
                note(&mut changes, format!("{} removed", item.id));
            }
        }
        let same_images = changes.added + changes.removed + changes.rewritten == 0;
        changes.model = same_images && self.features_key != old.features_key && old.items.len() == self.items.len();
        changes.split = same_images && self.split_hash != old.split_hash;
        changes
    }
}

/// A file's name under the data root, `/`-separated.
fn relative(root: Option<&Path>, path: &Path) -> String {
    let rel = root.and_then(|r| path.strip_prefix(r).ok()).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(items: &[(&str, &str, &str)]) -> DataManifest {
        DataManifest {
            features_key: "k".into(),
            split_hash: "s".into(),
            items: items
                .iter()
                .map(|(id, label, digest)| ManifestItem {
                    id: (*id).into(),
                    label: (*label).into(),
                    digest: (*digest).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn changes_are_counted_and_named() {
        let old = manifest(&[("a", "cat", "1"), ("b", "dog", "2"), ("c", "dog", "3")]);
        let new = manifest(&[("a", "dog", "1"), ("b", "dog", "9"), ("d", "cat", "4")]);
        let changes = new.changes_from(&old);
        assert_eq!((changes.added, changes.removed, changes.relabelled, changes.rewritten), (1, 1, 1, 1));
        assert_eq!(
            changes.to_string(),
            "1 image added, 1 image removed, 1 image relabelled, 1 image with other bytes \
             (e.g. a cat → dog, b rewritten, d added)"
        );
    }

    #[test]
    fn a_relabelled_image_changes_the_data_key_and_so_does_the_split() {
        let old = manifest(&[("a", "cat", "1"), ("b", "dog", "2")]);
        let relabelled = manifest(&[("a", "dog", "1"), ("b", "dog", "2")]);
        assert_ne!(old.data_key(), relabelled.data_key());
        let resplit = DataManifest { split_hash: "t".into(), ..old.clone() };
        assert_ne!(old.data_key(), resplit.data_key());
        assert_eq!(resplit.changes_from(&old).to_string(), "the split changed");
        let round = DataManifest::from_json(&old.to_json()).unwrap();
        assert_eq!(round.data_key(), old.data_key());
    }
}
