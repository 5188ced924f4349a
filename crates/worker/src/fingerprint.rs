//! What a job's results depend on besides its settings: the images' bytes,
//! their labels, the weights and transform (all in the feature-cache key) and
//! the split. [`DataManifest`] lists them, and its [`data_key`](DataManifest::data_key)
//! binds jobs to them: the same sweep file over changed data is other jobs.
//! [`DataManifest::changes_from`] says what changed, in words.
//!
//! A manifest is held for a whole run, so it costs a few bytes an image (a
//! class index, 8 bytes of hash, a name only where the image has one), not
//! a row of strings: at a million images that was most of a run's memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use crate::backbone::ModelConfig;
use crate::data::{DataConfig, Dataset, Layout, Source, Split};
use crate::features::{features_key, hash_file};
use crate::Error;

/// Bumped whenever what a data key covers changes.
const DATA_KEY_FORMAT: &str = "sweep-data-v1";

/// Everything a sweep's jobs train on, image by image. Its JSON (what the
/// store keeps) lists each image as `{"id", "label", "digest"}`: its name
/// under the data root (its index for generated images), its class, and 16
/// hex digits of BLAKE3 of its bytes (empty for generated images).
#[derive(Debug, Clone)]
pub struct DataManifest {
    /// The feature-cache key: images' bytes, backbone, weights, transform.
    pub features_key: String,
    /// A hash of the split (every fold's train and valid lists).
    pub split_hash: String,
    /// Class names; `labels` index into it.
    classes: Vec<String>,
    /// Each image's class.
    labels: Vec<u32>,
    /// Each image's name; `None` when every image is named by its position
    /// (generated images).
    names: Option<Names>,
    /// The first 8 bytes of each image's hash; empty for generated images.
    digests: Vec<u64>,
}

/// Strings end to end in one buffer.
#[derive(Debug, Clone, Default)]
struct Names {
    text: String,
    ends: Vec<usize>,
}

impl Names {
    /// The positions `0..n` as names.
    fn positions(n: usize) -> Names {
        let mut names = Names::default();
        for i in 0..n {
            names.push(&i.to_string());
        }
        names
    }

    fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// The JSON of one image, borrowed (reading: from the JSON text, when it
/// needs no unescaping).
#[derive(serde::Serialize, serde::Deserialize)]
struct ItemJson<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    label: Cow<'a, str>,
    #[serde(borrow)]
    digest: Cow<'a, str>,
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
        let mut hashes = Vec::new();
        let mut labels = Vec::with_capacity(dataset.items.len());
        let mut names: Option<Names> = None;
        for (i, item) in dataset.items.iter().enumerate() {
            labels.push(item.label);
            let name = match &item.source {
                Source::File(path) => {
                    let hash = hash_file(path).map_err(|message| Error::Image { path: path.clone(), message })?;
                    hashes.push(hash);
                    Some(relative(root, path))
                }
                Source::Synthetic { index } if *index == i => None,
                Source::Synthetic { index } => Some(index.to_string()),
            };
            if let Some(name) = name {
                names.get_or_insert_with(|| Names::positions(i)).push(&name);
            } else if let Some(names) = &mut names {
                names.push(&i.to_string());
            }
        }
        let features_key = features_key(dataset, model, &hashes)?;
        let digests = hashes.iter().map(|h| u64::from_be_bytes(h.as_bytes()[..8].try_into().unwrap())).collect();
        let mut h = blake3::Hasher::new();
        for split in splits {
            h.update(format!("{:?}|{:?};", split.train, split.valid).as_bytes());
        }
        let split_hash = h.finalize().to_hex()[..16].to_owned();
        Ok(DataManifest { features_key, split_hash, classes: dataset.classes.clone(), labels, names, digests })
    }

    /// How many images it lists.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it lists no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `i`-th image's name: its path under the data root, or its index.
    fn id(&self, i: usize) -> Cow<'_, str> {
        match &self.names {
            Some(names) => Cow::Borrowed(names.get(i)),
            None => Cow::Owned(i.to_string()),
        }
    }

    /// The `i`-th image's class name.
    fn label(&self, i: usize) -> &str {
        self.classes.get(self.labels[i] as usize).map_or("", String::as_str)
    }

    /// The `i`-th image's digest; `None` for a generated image.
    fn digest(&self, i: usize) -> Option<u64> {
        self.digests.get(i).copied()
    }

    /// The data key: a hash of the features' key, every image's class and
    /// the split. Jobs recorded under one data key never continue under another.
    pub fn data_key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(DATA_KEY_FORMAT.as_bytes());
        h.update(self.features_key.as_bytes());
        h.update(self.split_hash.as_bytes());
        for i in 0..self.len() {
            let label = self.label(i);
            h.update(&(label.len() as u64).to_le_bytes());
            h.update(label.as_bytes());
        }
        h.finalize().to_hex()[..16].to_owned()
    }

    /// The manifest as JSON: its features' key, its split's hash, and its
    /// images (`{"id", "label", "digest"}` each).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a manifest serialises")
    }

    /// [`to_json`](Self::to_json) with an empty list of images: what the
    /// store keeps beside the parts of [`items_json`](Self::items_json).
    pub fn header_json(&self) -> String {
        let header = DataManifest {
            features_key: self.features_key.clone(),
            split_hash: self.split_hash.clone(),
            classes: Vec::new(),
            labels: Vec::new(),
            names: None,
            digests: Vec::new(),
        };
        header.to_json()
    }

    /// The images in `range`, as the JSON list [`to_json`](Self::to_json) writes them.
    pub fn items_json(&self, range: Range<usize>) -> String {
        serde_json::to_string(&ItemsJson(self, range)).expect("a manifest serialises")
    }

    /// A manifest from [`to_json`](Self::to_json).
    pub fn from_json(json: &str) -> Result<DataManifest, String> {
        Ok(DataManifest::reader(json)?.finish())
    }

    /// Reads a manifest back from its JSON and then, a part at a time, the
    /// images of its [`items_json`](Self::items_json) parts.
    pub fn reader(json: &str) -> Result<ManifestReader, String> {
        serde_json::from_str(json).map_err(unreadable)
    }

    /// Each image's name, and its position.
    fn positions(&self) -> HashMap<Cow<'_, str>, usize> {
        (0..self.len()).map(|i| (self.id(i), i)).collect()
    }

    /// What changed from `old` to `self`.
    pub fn changes_from(&self, old: &DataManifest) -> DataChanges {
        let before = old.positions();
        let after = self.positions();
        let mut changes = DataChanges::default();
        let note = |changes: &mut DataChanges, what: String| {
            if changes.examples.len() < 3 {
                changes.examples.push(what);
            }
        };
        for i in 0..self.len() {
            let id = self.id(i);
            match before.get(&id) {
                None => {
                    changes.added += 1;
                    note(&mut changes, format!("{id} added"));
                }
                Some(&was) => {
                    if old.label(was) != self.label(i) {
                        changes.relabelled += 1;
                        note(&mut changes, format!("{id} {} → {}", old.label(was), self.label(i)));
                    }
                    if old.digest(was) != self.digest(i) {
                        changes.rewritten += 1;
                        note(&mut changes, format!("{id} rewritten"));
                    }
                }
            }
        }
        for j in 0..old.len() {
            let id = old.id(j);
            if !after.contains_key(&id) {
                changes.removed += 1;
                note(&mut changes, format!("{id} removed"));
            }
        }
        let same_images = changes.added + changes.removed + changes.rewritten == 0;
        changes.model = same_images && self.features_key != old.features_key && old.len() == self.len();
        changes.split = same_images && self.split_hash != old.split_hash;
        changes
    }
}

/// The images `range` of a manifest, one JSON object each, formatted as
/// they are written.
struct ItemsJson<'a>(&'a DataManifest, Range<usize>);

impl serde::Serialize for ItemsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut seq = serializer.serialize_seq(Some(self.1.len()))?;
        for i in self.1.clone() {
            let digest = m.digest(i).map_or(String::new(), |d| format!("{d:016x}"));
            let label = Cow::Borrowed(m.label(i));
            seq.serialize_element(&ItemJson { id: m.id(i), label, digest: Cow::Owned(digest) })?;
        }
        seq.end()
    }
}

impl serde::Serialize for DataManifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("DataManifest", 3)?;
        s.serialize_field("features_key", &self.features_key)?;
        s.serialize_field("split_hash", &self.split_hash)?;
        s.serialize_field("items", &ItemsJson(self, 0..self.len()))?;
        s.end()
    }
}

/// Images read back from JSON, in the compact form.
#[derive(Default)]
struct Items {
    classes: Vec<String>,
    class_of: HashMap<String, u32>,
    labels: Vec<u32>,
    names: Option<Names>,
    digests: Vec<u64>,
}

impl Items {
    fn push(&mut self, item: ItemJson<'_>) -> Result<(), String> {
        let i = self.labels.len();
        let class = match self.class_of.get(item.label.as_ref()) {
            Some(&c) => c,
            None => {
                let c = self.classes.len() as u32;
                self.classes.push(item.label.clone().into_owned());
                self.class_of.insert(item.label.into_owned(), c);
                c
            }
        };
        self.labels.push(class);
        if self.names.is_some() || item.id != i.to_string() {
            self.names.get_or_insert_with(|| Names::positions(i)).push(&item.id);
        }
        match item.digest.as_ref() {
            "" if self.digests.is_empty() => {}
            hex if hex.len() == 16 && self.digests.len() == i => {
                let digest = u64::from_str_radix(hex, 16)
                    .map_err(|_| format!("image {}: digest {hex:?} is not hex", item.id))?;
                self.digests.push(digest);
            }
            hex => {
                return Err(format!("image {}: digest {hex:?} is not 16 hex digits like the other images'", item.id))
            }
        }
        Ok(())
    }
}

/// Appends a JSON list of images to [`Items`], one at a time.
struct Append<'a>(&'a mut Items);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of images")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<ItemJson<'_>>()? {
            self.0.push(item).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// A manifest read back a part at a time: [`DataManifest::reader`].
pub struct ManifestReader {
    features_key: String,
    split_hash: String,
    items: Items,
}

impl ManifestReader {
    /// Appends a part's images (a JSON list, as [`DataManifest::items_json`] wrote it).
    pub fn part(&mut self, json: &str) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_str(json);
        Append(&mut self.items).deserialize(&mut de).and_then(|()| de.end()).map_err(unreadable)
    }

    /// The manifest.
    pub fn finish(self) -> DataManifest {
        let Items { classes, labels, names, digests, .. } = self.items;
        DataManifest { features_key: self.features_key, split_hash: self.split_hash, classes, labels, names, digests }
    }
}

impl<'de> serde::Deserialize<'de> for ManifestReader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ManifestReader, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = ManifestReader;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data manifest")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ManifestReader, A::Error> {
                let (mut features_key, mut split_hash, mut items) = (None, None, Items::default());
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "features_key" => features_key = Some(map.next_value()?),
                        "split_hash" => split_hash = Some(map.next_value()?),
                        "items" => map.next_value_seed(Append(&mut items))?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(ManifestReader {
                    features_key: features_key.ok_or_else(|| de::Error::missing_field("features_key"))?,
                    split_hash: split_hash.ok_or_else(|| de::Error::missing_field("split_hash"))?,
                    items,
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

fn unreadable(e: impl std::fmt::Display) -> String {
    format!("a recorded data manifest is unreadable: {e}")
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
        let items: Vec<serde_json::Value> = items
            .iter()
            .map(|(id, label, digest)| serde_json::json!({"id": id, "label": label, "digest": digest}))
            .collect();
        let json = serde_json::json!({"features_key": "k", "split_hash": "s", "items": items});
        DataManifest::from_json(&json.to_string()).unwrap()
    }

    #[test]
    fn changes_are_counted_and_named() {
        let old = manifest(&[
            ("a", "cat", "0000000000000001"),
            ("b", "dog", "0000000000000002"),
            ("c", "dog", "0000000000000003"),
        ]);
        let new = manifest(&[
            ("a", "dog", "0000000000000001"),
            ("b", "dog", "0000000000000009"),
            ("d", "cat", "0000000000000004"),
        ]);
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
        let old = manifest(&[("a", "cat", ""), ("b", "dog", "")]);
        let relabelled = manifest(&[("a", "dog", ""), ("b", "dog", "")]);
        assert_ne!(old.data_key(), relabelled.data_key());
        let resplit = DataManifest { split_hash: "t".into(), ..old.clone() };
        assert_ne!(old.data_key(), resplit.data_key());
        assert_eq!(resplit.changes_from(&old).to_string(), "the split changed");
        let round = DataManifest::from_json(&old.to_json()).unwrap();
        assert_eq!(round.data_key(), old.data_key());
    }

    /// The compact manifest reads and writes the JSON the store already
    /// keeps (written when a manifest was a row of three strings an image),
    /// byte for byte, and gives the same data keys: every recorded sweep
    /// stays bound to its data. The keys and JSON below were printed by that
    /// earlier manifest.
    #[test]
    fn recorded_manifests_read_back_to_the_same_json_and_data_key() {
        let files = r#"{"features_key":"k","split_hash":"s","items":[{"id":"train/a.jpg","label":"cat","digest":"0123456789abcdef"},{"id":"train/b.jpg","label":"dog","digest":"fedcba9876543210"},{"id":"train/c \"q\".jpg","label":"cat","digest":"00000000000000ff"}]}"#;
        let generated = r#"{"features_key":"k2","split_hash":"s2","items":[{"id":"0","label":"b","digest":""},{"id":"1","label":"a","digest":""},{"id":"2","label":"b","digest":""}]}"#;
        for (json, key) in [(files, "2b3968e8b2db95c0"), (generated, "34c1cabedb325599")] {
            let m = DataManifest::from_json(json).unwrap();
            assert_eq!(m.to_json(), json);
            assert_eq!(m.data_key(), key);
        }
        // Generated images named by their position keep no names.
        assert!(DataManifest::from_json(generated).unwrap().names.is_none());
        // Out of order, they do.
        let shuffled = generated.replace(r#""id":"0""#, r#""id":"7""#);
        assert_eq!(DataManifest::from_json(&shuffled).unwrap().to_json(), shuffled);
    }

    #[test]
    fn a_manifest_read_back_a_part_at_a_time_is_the_manifest() {
        let m = manifest(&[("a", "cat", ""), ("b", "dog", ""), ("c", "cat", "")]);
        assert_eq!(m.header_json(), r#"{"features_key":"k","split_hash":"s","items":[]}"#);
        let mut reader = DataManifest::reader(&m.header_json()).unwrap();
        for range in [0..2, 2..3] {
            reader.part(&m.items_json(range)).unwrap();
        }
        let back = reader.finish();
        assert_eq!((back.to_json(), back.data_key()), (m.to_json(), m.data_key()));
        let e = DataManifest::reader(&m.header_json()).unwrap().part("[{\"id\":1}]").unwrap_err();
        assert!(e.starts_with("a recorded data manifest is unreadable: "), "{e}");
    }

    #[test]
    fn a_digest_that_is_not_16_hex_digits_is_refused() {
        for digest in ["12", "zzzzzzzzzzzzzzzz"] {
            let json = format!(
                r#"{{"features_key":"k","split_hash":"s","items":[{{"id":"a","label":"c","digest":"0123456789abcdef"}},{{"id":"b","label":"c","digest":"{digest}"}}]}}"#
            );
            let e = DataManifest::from_json(&json).unwrap_err();
            assert!(e.contains("image b") && e.contains(digest), "{e}");
        }
    }
}
