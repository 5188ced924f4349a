//! Data sets: the Kaggle dog-breed layout, torchvision's ImageFolder layout and
//! generated images; the seeded train/valid split.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Error;

/// Where the images are and how they are split.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// The layout and its location.
    pub layout: Layout,
    /// Share of the images held out for validation, in (0, 1).
    pub valid_fraction: f64,
    /// Seed of the train/valid split.
    pub split_seed: u64,
}

/// How a data set is laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// `root/labels.csv` (`id,breed`) and `root/train/<id>.jpg`.
    Kaggle {
        /// The folder holding `labels.csv`.
        root: PathBuf,
    },
    /// `root/<class>/*.{jpg,jpeg,png}` (torchvision's ImageFolder).
    Folder {
        /// The folder holding one folder per class.
        root: PathBuf,
    },
    /// Generated images, no files.
    Synthetic(SyntheticConfig),
}

impl Layout {
    /// The layout's name in a sweep file.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Kaggle { .. } => "kaggle",
            Layout::Folder { .. } => "folder",
            Layout::Synthetic(_) => "synthetic",
        }
    }
}

/// A generated data set: `images` images of `width` x `height` pixels in
/// `classes` classes that differ in shape, colour and texture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Number of classes.
    pub classes: usize,
    /// Number of images, spread evenly over the classes.
    pub images: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Seed of the generator.
    pub seed: u64,
}

/// Where one image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An image file.
    File(PathBuf),
    /// The `index`-th generated image.
    Synthetic {
        /// Position in the generated set.
        index: usize,
    },
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where its pixels come from.
    pub source: Source,
    /// Index into [`Dataset::classes`].
    pub label: u32,
}

/// A labelled image set, in a deterministic order.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names, sorted; a label is an index into this.
    pub classes: Vec<String>,
    /// The images.
    pub items: Vec<Item>,
    /// For generated sets, their description.
    pub synthetic: Option<SyntheticConfig>,
}

/// Lists the images of a data set and checks that each one exists.
/// Nothing is decoded yet.
pub fn load_dataset(config: &DataConfig) -> Result<Dataset, Error> {
    match &config.layout {
        Layout::Kaggle { root } => load_kaggle(root),
        Layout::Folder { root } => load_folder(root),
        Layout::Synthetic(cfg) => Ok(Dataset {
            classes: (0..cfg.classes).map(|c| format!("class{c:03}")).collect(),
            items: (0..cfg.images)
                .map(|index| Item { source: Source::Synthetic { index }, label: (index % cfg.classes) as u32 })
                .collect(),
            synthetic: Some(*cfg),
        }),
    }
}

fn load_kaggle(root: &Path) -> Result<Dataset, Error> {
    let csv_path = root.join("labels.csv");
    let data_err = |line: Option<usize>, message: String| Error::Data { path: csv_path.clone(), line, message };
    let file = std::fs::File::open(&csv_path).map_err(|e| data_err(None, format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
    let headers = reader.headers().map_err(|e| data_err(Some(1), format!("cannot read the header: {e}")))?.clone();
    if headers.len() != 2 || &headers[0] != "id" || &headers[1] != "breed" {
        let got: Vec<&str> = headers.iter().collect();
        return Err(data_err(Some(1), format!("the header must be `id,breed`, got `{}`", got.join(","))));
    }
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize);
            data_err(line, format!("malformed row: {e}"))
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        if record.len() != 2 {
            return Err(data_err(Some(line), format!("expected 2 fields (id,breed), got {}", record.len())));
        }
        let (id, breed) = (record[0].trim(), record[1].trim());
        if id.is_empty() || breed.is_empty() {
            return Err(data_err(Some(line), "empty id or breed".to_owned()));
        }
        if !is_plain_name(id) {
            return Err(data_err(Some(line), format!("id `{id}` is not a plain file name (it would leave train/)")));
        }
        if let Some(first) = seen.insert(id.to_owned(), line) {
            return Err(data_err(Some(line), format!("duplicate id `{id}` (first on line {first})")));
        }
        rows.push((id.to_owned(), breed.to_owned(), line));
    }
    if rows.is_empty() {
        return Err(data_err(None, "no rows".to_owned()));
    }
    let classes: Vec<String> = rows.iter().map(|r| r.1.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut items = Vec::with_capacity(rows.len());
    for (id, breed, line) in rows {
        let path = root.join("train").join(format!("{id}.jpg"));
        if !path.is_file() {
            return Err(Error::Data {
                path: path.clone(),
                line: None,
                message: format!("missing image for id `{id}` (labels.csv line {line})"),
            });
        }
        let label = classes.binary_search(&breed).expect("breed is in classes") as u32;
        items.push(Item { source: Source::File(path), label });
    }
    Ok(Dataset { classes, items, synthetic: None })
}

fn is_plain_name(id: &str) -> bool {
    let mut components = Path::new(id).components();
    matches!((components.next(), components.next()), (Some(Component::Normal(_)), None)) && !id.contains(['/', '\\'])
}

fn load_folder(root: &Path) -> Result<Dataset, Error> {
    let io_err = |path: &Path, e: std::io::Error| Error::Data {
        path: path.to_owned(),
        line: None,
        message: format!("cannot list: {e}"),
    };
    let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io_err(root, e))? {
        let entry = entry.map_err(|e| io_err(root, e))?;
        if entry.file_type().map_err(|e| io_err(&entry.path(), e))?.is_dir() {
            class_dirs.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    class_dirs.sort();
    if class_dirs.is_empty() {
        return Err(Error::Data { path: root.to_owned(), line: None, message: "no class folders".to_owned() });
    }
    let mut classes = Vec::new();
    let mut items = Vec::new();
    for (label, (name, dir)) in class_dirs.into_iter().enumerate() {
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let path = entry.map_err(|e| io_err(&dir, e))?.path();
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if path.is_file() && matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(Error::Data {
                path: dir,
                line: None,
                message: "class folder holds no .jpg, .jpeg or .png image".to_owned(),
            });
        }
        files.sort();
        items.extend(files.into_iter().map(|path| Item { source: Source::File(path), label: label as u32 }));
        classes.push(name);
    }
    Ok(Dataset { classes, items, synthetic: None })
}

/// Indices of the training and validation images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training images, ascending.
    pub train: Vec<usize>,
    /// Validation images, ascending.
    pub valid: Vec<usize>,
}

/// Splits `n` images as pandas' `sample(frac=1 - valid_fraction)` does in the
/// paper (train = round(n * (1 - valid_fraction)), valid = the rest), with a
/// seeded shuffle: the same seed always gives the same split.
pub fn split(n: usize, valid_fraction: f64, seed: u64) -> Result<Split, Error> {
    let n_train = ((n as f64) * (1.0 - valid_fraction)).round() as usize;
    if n_train == 0 || n_train >= n {
        return Err(Error::Data {
            path: PathBuf::new(),
            line: None,
            message: format!(
                "{n} images cannot be split with valid_fraction {valid_fraction}: both parts need an image"
            ),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut train = order[..n_train].to_vec();
    let mut valid = order[n_train..].to_vec();
    train.sort_unstable();
    valid.sort_unstable();
    Ok(Split { train, valid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_follow_the_paper() {
        let s = split(10_222, 0.1, 0).unwrap();
        assert_eq!((s.train.len(), s.valid.len()), (9200, 1022));
        let mut all: Vec<usize> = s.train.iter().chain(&s.valid).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10_222).collect::<Vec<_>>());
        assert_eq!(s, split(10_222, 0.1, 0).unwrap());
        assert_ne!(s, split(10_222, 0.1, 1).unwrap());
    }

    #[test]
    fn plain_names() {
        assert!(is_plain_name("000bec180eb18c7604dcecc8fe0dba07"));
        assert!(!is_plain_name("../etc/passwd"));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("/abs"));
    }
}
