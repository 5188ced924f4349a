//! Data sets: the Kaggle dog-breed layout, torchvision's ImageFolder layout and
//! generated images; the seeded train/valid split and k folds (the other
//! split methods and split files: `split.rs`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Error;

#[cfg(test)]
mod fuzz;

/// Where the images are and how they are split.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// The layout and its location.
    pub layout: Layout,
    /// Share of the images held out for validation, in (0, 1).
    pub valid_fraction: f64,
    /// Seed of the train/valid split.
    pub split_seed: u64,
    /// Leave out the image files that fail [`check_images`](crate::check_images)
    /// ([`skip_bad_images`](crate::skip_bad_images)) instead of stopping.
    pub skip_bad_images: bool,
    /// How the split is made ([`make_splits`](crate::make_splits)).
    pub split_method: crate::SplitMethod,
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
/// Nothing is decoded yet. A data set of fewer than two classes is refused:
/// a head trained on one class reaches accuracy 1.0 and means nothing.
pub fn load_dataset(config: &DataConfig) -> Result<Dataset, Error> {
    let (dataset, source) = match &config.layout {
        Layout::Kaggle { root } => (load_kaggle(root)?, root.join("labels.csv")),
        Layout::Folder { root } => (load_folder(root)?, root.clone()),
        Layout::Synthetic(cfg) => {
            let classes = cfg.classes.max(1);
            let dataset = Dataset {
                classes: (0..cfg.classes).map(|c| format!("class{c:03}")).collect(),
                items: (0..cfg.images)
                    .map(|index| Item { source: Source::Synthetic { index }, label: (index % classes) as u32 })
                    .collect(),
                synthetic: Some(*cfg),
            };
            (dataset, PathBuf::from("synthetic data"))
        }
    };
    if dataset.classes.len() < 2 {
        let found = match dataset.classes.first() {
            Some(name) => format!("only one class, `{name}`"),
            None => "no class".to_owned(),
        };
        return Err(Error::Data {
            path: source,
            line: None,
            message: format!("{found}: a classifier needs at least two classes"),
        });
    }
    Ok(dataset)
}

/// Warns (`tracing::warn`, and returns the warnings) about each class too
/// small for `splits`: with k-fold splits (more than one), a class with
/// fewer images than folds, which some folds validate none of; with one
/// split, a class with no image on one side of it (not validated, or not
/// learned). `splits` are those of [`split`] or [`kfold`] over `dataset`.
pub fn small_class_warnings(dataset: &Dataset, splits: &[Split]) -> Vec<String> {
    let mut counts = vec![0usize; dataset.classes.len()];
    for item in &dataset.items {
        counts[item.label as usize] += 1;
    }
    let count_in = |indices: &[usize]| {
        let mut per_class = vec![0usize; dataset.classes.len()];
        for &i in indices {
            per_class[dataset.items[i].label as usize] += 1;
        }
        per_class
    };
    let mut warnings = Vec::new();
    if splits.len() > 1 {
        let k = splits.len();
        let valid: Vec<Vec<usize>> = splits.iter().map(|s| count_in(&s.valid)).collect();
        for (class, (name, &n)) in dataset.classes.iter().zip(&counts).enumerate() {
            if n < k {
                let empty = valid.iter().filter(|v| v[class] == 0).count();
                warnings.push(format!(
                    "class `{name}` has {n} image{}, fewer than the {k} folds: {empty} of the folds validate none of it",
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
    } else if let Some(split) = splits.first() {
        let (train, valid) = (count_in(&split.train), count_in(&split.valid));
        for (class, (name, &n)) in dataset.classes.iter().zip(&counts).enumerate() {
            let plural = if n == 1 { "" } else { "s" };
            if valid[class] == 0 {
                warnings.push(format!(
                    "class `{name}` has {n} image{plural}, none of them in the valid split: its accuracy is not measured"
                ));
            } else if train[class] == 0 {
                warnings.push(format!(
                    "class `{name}` has {n} image{plural}, none of them in the train split: the head cannot learn it"
                ));
            }
        }
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    warnings
}

fn load_kaggle(root: &Path) -> Result<Dataset, Error> {
    let csv_path = root.join("labels.csv");
    let data_err = |line: Option<usize>, message: String| Error::Data { path: csv_path.clone(), line, message };
    let file = std::fs::File::open(&csv_path).map_err(|e| data_err(None, format!("cannot open: {e}")))?;
    // Flexible: a row with the wrong number of fields gets our message, not the parser's.
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(file);
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

/// Splits `n` images into sets of the sizes pandas' `sample(frac=1 -
/// valid_fraction)` gives in the paper (train = round(n * (1 -
/// valid_fraction)), valid = the rest), by a seeded ChaCha8 shuffle: the same
/// seed always gives the same split, but not pandas' rows (for those,
/// [`pandas_split`](crate::pandas_split)).
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

    /// A kaggle-layout folder: `labels.csv` with `csv` and an empty file for each `train/<id>.jpg`.
    fn kaggle(csv: &str, images: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.csv"), csv).unwrap();
        std::fs::create_dir(dir.path().join("train")).unwrap();
        for id in images {
            std::fs::write(dir.path().join("train").join(format!("{id}.jpg")), b"").unwrap();
        }
        dir
    }

    fn load(layout: Layout) -> Result<Dataset, Error> {
        load_dataset(&DataConfig {
            layout,
            valid_fraction: 0.1,
            split_seed: 0,
            skip_bad_images: false,
            split_method: crate::SplitMethod::Shuffle,
        })
    }

    fn load_kaggle_dir(dir: &tempfile::TempDir) -> Result<Dataset, Error> {
        load(Layout::Kaggle { root: dir.path().to_owned() })
    }

    /// The error's text, with the temp folder written `ROOT`.
    fn message(err: Error, dir: &tempfile::TempDir) -> String {
        err.to_string().replace(&dir.path().display().to_string(), "ROOT")
    }

    #[test]
    fn kaggle_lists_rows_in_file_order_with_sorted_classes() {
        let dir = kaggle("id,breed\nb2,pug\na1,beagle\r\nc3 , pug\n", &["a1", "b2", "c3"]);
        let data = load_kaggle_dir(&dir).unwrap();
        assert_eq!(data.classes, ["beagle", "pug"]);
        let files: Vec<_> = data.items.iter().map(|i| (i.source.clone(), i.label)).collect();
        let file = |id: &str| Source::File(dir.path().join("train").join(format!("{id}.jpg")));
        assert_eq!(files, [(file("b2"), 1), (file("a1"), 0), (file("c3"), 1)]);
        assert!(data.synthetic.is_none());
        // A UTF-8 byte-order mark, as spreadsheets write, is not part of the header.
        let dir = kaggle("\u{feff}id,breed\nx,pug\ny,husky\n", &["x", "y"]);
        assert_eq!(load_kaggle_dir(&dir).unwrap().items.len(), 2);
    }

    #[test]
    fn kaggle_errors_name_the_file_and_line() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("name,breed\na,pug\n", &["a"], "ROOT/labels.csv:1: the header must be `id,breed`, got `name,breed`"),
            (
                "id,breed,extra\na,pug,1\n",
                &["a"],
                "ROOT/labels.csv:1: the header must be `id,breed`, got `id,breed,extra`",
            ),
            ("", &[], "ROOT/labels.csv:1: the header must be `id,breed`, got ``"),
            ("id,breed\n", &[], "ROOT/labels.csv: no rows"),
            (
                "id,breed\na,pug\nb,pug\na,beagle\n",
                &["a", "b"],
                "ROOT/labels.csv:4: duplicate id `a` (first on line 2)",
            ),
            (
                "id,breed\n../../etc/passwd,pug\n",
                &[],
                "ROOT/labels.csv:2: id `../../etc/passwd` is not a plain file name (it would leave train/)",
            ),
            ("id,breed\na,pug\n,pug\n", &["a"], "ROOT/labels.csv:3: empty id or breed"),
            ("id,breed\na,pug,x\n", &["a"], "ROOT/labels.csv:2: expected 2 fields (id,breed), got 3"),
            ("id,breed\na,pug\nb\n", &["a", "b"], "ROOT/labels.csv:3: expected 2 fields (id,breed), got 1"),
            ("id,breed\na,pug\nb,pug\n", &["a"], "ROOT/train/b.jpg: missing image for id `b` (labels.csv line 3)"),
        ];
        for (csv, images, want) in cases {
            let dir = kaggle(csv, images);
            assert_eq!(message(load_kaggle_dir(&dir).unwrap_err(), &dir), *want, "{csv:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = message(load_kaggle_dir(&dir).unwrap_err(), &dir);
        assert!(err.starts_with("ROOT/labels.csv: cannot open: "), "{err}");
    }

    #[test]
    fn folder_sorts_classes_and_files_and_keeps_only_images() {
        let dir = tempfile::tempdir().unwrap();
        for (class, files) in [("zebra", &["b.PNG", "a.jpg", "notes.txt"][..]), ("ant", &["x.jpeg"][..])] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(class).join(f), b"").unwrap();
            }
        }
        std::fs::write(dir.path().join("README.md"), b"").unwrap();
        let data = load(Layout::Folder { root: dir.path().to_owned() }).unwrap();
        assert_eq!(data.classes, ["ant", "zebra"]);
        let names: Vec<_> = data
            .items
            .iter()
            .map(|i| match &i.source {
                Source::File(p) => (p.strip_prefix(dir.path()).unwrap().display().to_string(), i.label),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [("ant/x.jpeg".to_owned(), 0), ("zebra/a.jpg".to_owned(), 1), ("zebra/b.PNG".to_owned(), 1)]);

        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let err = message(load(Layout::Folder { root: dir.path().to_owned() }).unwrap_err(), &dir);
        assert_eq!(err, "ROOT/empty: class folder holds no .jpg, .jpeg or .png image");
        let none = tempfile::tempdir().unwrap();
        let err = message(load(Layout::Folder { root: none.path().to_owned() }).unwrap_err(), &none);
        assert_eq!(err, "ROOT: no class folders");
        let err = message(load(Layout::Folder { root: none.path().join("nope") }).unwrap_err(), &none);
        assert!(err.starts_with("ROOT/nope: cannot list: "), "{err}");
    }

    /// Issue 16d: one class trained to accuracy 1.0 without a word.
    #[test]
    fn fewer_than_two_classes_are_refused_naming_the_labels() {
        let dir = kaggle("id,breed\na,pug\nb,pug\n", &["a", "b"]);
        let err = message(load_kaggle_dir(&dir).unwrap_err(), &dir);
        assert_eq!(err, "ROOT/labels.csv: only one class, `pug`: a classifier needs at least two classes");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cats")).unwrap();
        std::fs::write(dir.path().join("cats/a.jpg"), b"").unwrap();
        let err = message(load(Layout::Folder { root: dir.path().to_owned() }).unwrap_err(), &dir);
        assert_eq!(err, "ROOT: only one class, `cats`: a classifier needs at least two classes");
        let one = SyntheticConfig { classes: 1, images: 4, width: 8, height: 8, seed: 0 };
        let err = load(Layout::Synthetic(one)).unwrap_err().to_string();
        assert_eq!(err, "synthetic data: only one class, `class000`: a classifier needs at least two classes");
        let none = SyntheticConfig { classes: 0, ..one };
        assert!(load(Layout::Synthetic(none)).unwrap_err().to_string().contains("no class"));
    }

    #[test]
    fn classes_too_small_for_the_split_or_the_folds_are_warned_about() {
        // 3 classes: `big` 20 images, `few` 3, `one` 1.
        let labels: Vec<u32> = (0..24)
            .map(|i| {
                if i < 20 {
                    0
                } else if i < 23 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let dataset = Dataset {
            classes: vec!["big".into(), "few".into(), "one".into()],
            items: labels.iter().map(|&label| Item { source: Source::Synthetic { index: 0 }, label }).collect(),
            synthetic: None,
        };
        let folds = kfold(24, 5, 0).unwrap();
        let warnings = small_class_warnings(&dataset, &folds);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let without_few = folds.iter().filter(|f| f.valid.iter().all(|&i| labels[i] != 1)).count();
        assert_eq!(
            warnings[0],
            format!("class `few` has 3 images, fewer than the 5 folds: {without_few} of the folds validate none of it")
        );
        assert_eq!(warnings[1], "class `one` has 1 image, fewer than the 5 folds: 4 of the folds validate none of it");
        // One split: the single `one` image is either validated (not learned) or learned (not validated).
        let one_split = Split { train: (0..23).collect(), valid: vec![23] };
        let warnings = small_class_warnings(&dataset, &[one_split]);
        assert_eq!(
            warnings,
            [
                "class `big` has 20 images, none of them in the valid split: its accuracy is not measured",
                "class `few` has 3 images, none of them in the valid split: its accuracy is not measured",
                "class `one` has 1 image, none of them in the train split: the head cannot learn it",
            ]
        );
        let even = Split { train: vec![0, 1, 20, 21, 23], valid: vec![2, 22] };
        let mut warned = small_class_warnings(&dataset, &[even]);
        assert_eq!(
            warned.pop().unwrap(),
            "class `one` has 1 image, none of them in the valid split: its accuracy is not measured"
        );
        assert!(warned.is_empty());
    }

    #[test]
    fn synthetic_spreads_images_over_classes() {
        let cfg = SyntheticConfig { classes: 3, images: 7, width: 8, height: 8, seed: 0 };
        let data = load(Layout::Synthetic(cfg)).unwrap();
        assert_eq!(data.classes, ["class000", "class001", "class002"]);
        let labels: Vec<u32> = data.items.iter().map(|i| i.label).collect();
        assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(data.items[5].source, Source::Synthetic { index: 5 });
        assert_eq!(data.synthetic, Some(cfg));
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

/// K-fold cross-validation (the paper's section 2.4): `k` splits of `n`
/// images, each holding out one fold as its valid set. The folds come from
/// one seeded shuffle, so every image is in exactly one valid fold; their
/// sizes differ by at most one (the first `n % k` folds have the extra image,
/// as scikit-learn's `KFold`). Both parts of each split are ascending.
pub fn kfold(n: usize, k: usize, seed: u64) -> Result<Vec<Split>, Error> {
    if k < 2 || k > n {
        return Err(Error::Data {
            path: PathBuf::new(),
            line: None,
            message: format!("{n} images cannot be split into {k} folds: need 2 <= folds <= images"),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut start = 0;
    let splits = (0..k)
        .map(|fold| {
            let len = n / k + usize::from(fold < n % k);
            let mut valid = order[start..start + len].to_vec();
            let mut train: Vec<usize> = order[..start].iter().chain(&order[start + len..]).copied().collect();
            start += len;
            valid.sort_unstable();
            train.sort_unstable();
            Split { train, valid }
        })
        .collect();
    Ok(splits)
}

#[cfg(test)]
mod kfold_tests {
    use super::*;

    #[test]
    fn every_image_is_in_exactly_one_valid_fold() {
        for (n, k) in [(10, 2), (10, 3), (11, 5), (7, 7), (10_222, 10)] {
            let folds = kfold(n, k, 3).unwrap();
            assert_eq!(folds.len(), k);
            let mut seen = vec![0; n];
            for fold in &folds {
                assert!(fold.valid.windows(2).all(|w| w[0] < w[1]) && fold.train.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(fold.train.len() + fold.valid.len(), n);
                assert!(fold.train.iter().all(|i| fold.valid.binary_search(i).is_err()), "train and valid overlap");
                for &i in &fold.valid {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "n={n} k={k}: {seen:?}");
            let sizes: Vec<usize> = folds.iter().map(|f| f.valid.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn folds_follow_the_seed() {
        assert_eq!(kfold(50, 5, 1).unwrap(), kfold(50, 5, 1).unwrap());
        assert_ne!(kfold(50, 5, 1).unwrap(), kfold(50, 5, 2).unwrap());
        // The folds are a shuffle, not consecutive runs of indices.
        assert_ne!(kfold(50, 5, 1).unwrap()[0].valid, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn too_few_or_too_many_folds_are_refused() {
        assert!(kfold(10, 1, 0).is_err());
        assert!(kfold(3, 4, 0).is_err());
        assert!(kfold(0, 2, 0).is_err());
    }
}
