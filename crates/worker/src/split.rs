//! The split, visible and portable: which images train and which validate,
//! made one of three ways ([`SplitMethod`]), written out as a CSV file
//! (`id,set[,fold]`, [`split_csv`]) and read back from one
//! ([`SplitMethod::File`]), so a notebook's split is reproduced exactly.
//!
//! `pandas` reproduces `df.sample(frac=1 - valid_fraction,
//! random_state=split_seed)` bit for bit: pandas draws the rows with numpy's
//! legacy `RandomState(seed).choice(n, k, replace=False)`, which is
//! `permutation(n)[:k]`: MT19937 seeded by `init_genrand`, and the legacy
//! Fisher-Yates shuffle whose draws are masked rejection samples
//! (`random_interval`). `tests/fixtures/pandas-split.txt` holds what numpy
//! and pandas give; `tests/fixtures/pandas-split.py` made it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::{kfold, split, Dataset, Layout, Source, Split};
use crate::{DataConfig, Error};

/// How the images are split into train and valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SplitMethod {
    /// A seeded shuffle (ChaCha8): train = round(n·(1 − valid_fraction)),
    /// valid the rest; with `folds`, k folds from one shuffle.
    #[default]
    Shuffle,
    /// pandas' `df.sample(frac=1 - valid_fraction, random_state=split_seed)`,
    /// exactly: train = the sampled rows, valid = the others.
    Pandas,
    /// The split a CSV file gives (`id,set` or `id,set,fold`).
    File(PathBuf),
}

impl SplitMethod {
    /// The name in a sweep file (`split_method`), or the file's path.
    pub fn describe(&self) -> String {
        match self {
            SplitMethod::Shuffle => "shuffle".to_owned(),
            SplitMethod::Pandas => "pandas".to_owned(),
            SplitMethod::File(path) => path.display().to_string(),
        }
    }
}

/// The splits of `dataset` as `config` asks: one, or one per fold when
/// `folds` is set (a split file then needs a `fold` column of 0..folds).
///
/// A split file is checked whole: every id of the data set once per fold,
/// no other id, `set` `train` or `valid`, both sides of every split holding
/// an image; a problem is one error naming the file and its line. With
/// `lenient`, ids the file names that the data set lacks are passed over:
/// for a data set from which `skip_bad_images` removed images the strict
/// check already saw.
pub fn make_splits(
    dataset: &Dataset,
    config: &DataConfig,
    folds: Option<usize>,
    lenient: bool,
) -> Result<Vec<Split>, Error> {
    let n = dataset.items.len();
    match (&config.split_method, folds) {
        (SplitMethod::Shuffle, Some(k)) => kfold(n, k, config.split_seed),
        (SplitMethod::Shuffle, None) => Ok(vec![split(n, config.valid_fraction, config.split_seed)?]),
        (SplitMethod::Pandas, None) => Ok(vec![pandas_split(n, config.valid_fraction, config.split_seed)?]),
        (SplitMethod::Pandas, Some(_)) => Err(Error::Data {
            path: PathBuf::new(),
            line: None,
            message: "split_method = \"pandas\" makes one split, not folds".to_owned(),
        }),
        (SplitMethod::File(path), folds) => read_split(path, &item_ids(dataset, &config.layout), folds, lenient),
    }
}

/// A short hash of the valid sets of `splits`: equal splits, equal hash
/// (what `sweep status` shows and `split_json.hash` records).
pub fn split_hash(splits: &[Split]) -> String {
    let valid_lists: Vec<&[usize]> = splits.iter().map(|s| s.valid.as_slice()).collect();
    blake3::hash(format!("{valid_lists:?}").as_bytes()).to_hex()[..16].to_string()
}

/// Each image's id in a split file: a Kaggle layout's id (`labels.csv`), an
/// ImageFolder layout's path under the root (`class/file.jpg`, with `/`), a
/// generated image's index.
pub fn item_ids(dataset: &Dataset, layout: &Layout) -> Vec<String> {
    dataset
        .items
        .iter()
        .map(|item| match (&item.source, layout) {
            (Source::Synthetic { index }, _) => index.to_string(),
            (Source::File(path), Layout::Folder { root }) => {
                let rel = path.strip_prefix(root).unwrap_or(path);
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
            }
            // Kaggle: `train/<id>.jpg`.
            (Source::File(path), _) => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        })
        .collect()
}

/// `splits` as a split file: `id,set` (`train` or `valid`) in data set
/// order, or with folds `id,set,fold`, one row per image and fold.
pub fn split_csv(ids: &[String], splits: &[Split], folds: bool) -> Result<String, Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::Data { path: PathBuf::from("split"), line: None, message: e.to_string() };
    if folds {
        writer.write_record(["id", "set", "fold"]).map_err(err)?;
    } else {
        writer.write_record(["id", "set"]).map_err(err)?;
    }
    for (fold, s) in splits.iter().enumerate() {
        let mut set = vec!["train"; ids.len()];
        for &i in &s.valid {
            set[i] = "valid";
        }
        let fold = fold.to_string();
        for (id, set) in ids.iter().zip(set) {
            if folds {
                writer.write_record([id.as_str(), set, &fold]).map_err(err)?;
            } else {
                writer.write_record([id.as_str(), set]).map_err(err)?;
            }
        }
    }
    let bytes = writer.into_inner().map_err(|e| Error::Data {
        path: PathBuf::from("split"),
        line: None,
        message: e.to_string(),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads a split file against the data set's `ids` (see [`make_splits`]).
fn read_split(path: &Path, ids: &[String], folds: Option<usize>, lenient: bool) -> Result<Vec<Split>, Error> {
    let err = |line: Option<usize>, message: String| Error::Data { path: path.to_owned(), line, message };
    let file = std::fs::File::open(path).map_err(|e| err(None, format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(file);
    let headers = reader.headers().map_err(|e| err(Some(1), format!("cannot read the header: {e}")))?.clone();
    let header: Vec<&str> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').trim()).collect();
    let with_fold = match header.as_slice() {
        ["id", "set"] => false,
        ["id", "set", "fold"] => true,
        _ => {
            return Err(err(
                Some(1),
                format!("the header must be `id,set` or `id,set,fold`, got `{}`", header.join(",")),
            ))
        }
    };
    let k = match (with_fold, folds) {
        (false, None) => 1,
        (true, Some(k)) => k,
        (true, None) => {
            return Err(err(
                Some(1),
                "the file has a `fold` column but the sweep file sets no `folds`: set [data] folds to its number \
                 of folds"
                    .to_owned(),
            ))
        }
        (false, Some(k)) => {
            return Err(err(
                Some(1),
                format!("[data] folds = {k} needs a `fold` column (`id,set,fold`, one row per image and fold)"),
            ))
        }
    };
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    // Per fold, per image: the line that placed it, and whether it validates.
    let mut placed: Vec<Vec<Option<(usize, bool)>>> = vec![vec![None; ids.len()]; k];
    for record in reader.records() {
        let record = record.map_err(|e| err(e.position().map(|p| p.line() as usize), format!("malformed row: {e}")))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let want = if with_fold { 3 } else { 2 };
        if record.len() != want {
            return Err(err(
                Some(line),
                format!("expected {want} fields ({}), got {}", header.join(","), record.len()),
            ));
        }
        let (id, set) = (record[0].trim(), record[1].trim());
        let valid = match set {
            "train" => false,
            "valid" => true,
            other => return Err(err(Some(line), format!("set must be `train` or `valid`, got `{other}`"))),
        };
        let fold = if with_fold {
            let text = record[2].trim();
            match text.parse::<usize>() {
                Ok(f) if f < k => f,
                _ => {
                    return Err(err(
                        Some(line),
                        format!("fold must be a whole number from 0 to {} ([data] folds = {k}), got `{text}`", k - 1),
                    ))
                }
            }
        } else {
            0
        };
        let Some(&i) = index.get(id) else {
            if lenient {
                continue;
            }
            return Err(err(Some(line), format!("unknown id `{id}`: no image of the data set has it")));
        };
        if let Some((first, _)) = placed[fold][i] {
            let which = if with_fold { format!(" in fold {fold}") } else { String::new() };
            return Err(err(Some(line), format!("duplicate id `{id}`{which} (first on line {first})")));
        }
        placed[fold][i] = Some((line, valid));
    }
    let mut splits = Vec::with_capacity(k);
    for (fold, places) in placed.iter().enumerate() {
        let which = if with_fold { format!(" from fold {fold}") } else { String::new() };
        let missing: Vec<&str> =
            places.iter().zip(ids).filter(|(p, _)| p.is_none()).map(|(_, id)| id.as_str()).collect();
        if let Some(first) = missing.first() {
            return Err(err(
                None,
                format!(
                    "{} of the data set's {} images missing{which}, the first `{first}`: every image needs a row",
                    missing.len(),
                    ids.len()
                ),
            ));
        }
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        for (i, place) in places.iter().enumerate() {
            match place {
                Some((_, true)) => valid.push(i),
                _ => train.push(i),
            }
        }
        if train.is_empty() || valid.is_empty() {
            let empty = if train.is_empty() { "train" } else { "valid" };
            let which = if with_fold { format!("fold {fold}: ") } else { String::new() };
            return Err(err(None, format!("{which}no image is in the {empty} set: both sets need an image")));
        }
        splits.push(Split { train, valid });
    }
    Ok(splits)
}

/// pandas' `df.sample(frac=1 - valid_fraction, random_state=seed)` over `n`
/// rows: train = the `round(frac·n)` sampled rows (Python's rounding, half to
/// even), valid = the others; both ascending, as every [`Split`].
pub fn pandas_split(n: usize, valid_fraction: f64, seed: u64) -> Result<Split, Error> {
    let n_train = ((1.0 - valid_fraction) * n as f64).round_ties_even() as usize;
    let refuse = |message: String| Error::Data { path: PathBuf::new(), line: None, message };
    if n_train == 0 || n_train >= n {
        return Err(refuse(format!(
            "{n} images cannot be split with valid_fraction {valid_fraction}: both parts need an image"
        )));
    }
    let Ok(seed) = u32::try_from(seed) else {
        return Err(refuse(format!(
            "split_method = \"pandas\" takes a split_seed from 0 to 4294967295 (numpy's RandomState), got {seed}"
        )));
    };
    let order = legacy_permutation(n, &mut Mt19937::new(seed));
    let mut train = order[..n_train].to_vec();
    let mut valid = order[n_train..].to_vec();
    train.sort_unstable();
    valid.sort_unstable();
    Ok(Split { train, valid })
}

/// numpy's legacy `RandomState.permutation(n)`: `arange(n)` shuffled by
/// `_shuffle_raw` (i from n−1 down to 1, j = `random_interval(i)`).
fn legacy_permutation(n: usize, mt: &mut Mt19937) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = random_interval(mt, i as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// numpy's `random_interval(max)`: a uniform draw in `0..=max` by masked
/// rejection: the smallest all-ones mask covering `max`, 32-bit draws while
/// `max` fits in 32 bits, else 64-bit ones.
fn random_interval(mt: &mut Mt19937, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut mask = max;
    for shift in [1, 2, 4, 8, 16, 32] {
        mask |= mask >> shift;
    }
    loop {
        let value = if max <= 0xffff_ffff {
            u64::from(mt.next_u32()) & mask
        } else {
            ((u64::from(mt.next_u32()) << 32) | u64::from(mt.next_u32())) & mask
        };
        if value <= max {
            return value;
        }
    }
}

/// The Mersenne Twister MT19937 (Matsumoto and Nishimura), seeded as numpy's
/// `RandomState(seed)` seeds it (`init_genrand`).
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { state, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.generate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Item;

    /// The reference's first outputs for `init_genrand(5489)` (mt19937ar.c).
    #[test]
    fn mt19937_matches_the_reference_generator() {
        let mut mt = Mt19937::new(5489);
        let first: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734]);
        // numpy: RandomState(0).randint(0, 2**32, size=3, dtype=np.uint64) draws
        // whole 32-bit words (masked by 0xffffffff): these three.
        let mut mt = Mt19937::new(0);
        let first: Vec<u32> = (0..3).map(|_| mt.next_u32()).collect();
        assert_eq!(first, [2_357_136_044, 2_546_248_239, 3_071_714_933]);
    }

    /// `tests/fixtures/pandas-split.txt`: lines `n frac seed: train indices`,
    /// in pandas' sample order, made by `tests/fixtures/pandas-split.py`.
    #[test]
    fn pandas_split_matches_pandas_sample() {
        let text = include_str!("../tests/fixtures/pandas-split.txt");
        let mut cases = 0;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (head, indices) = line.split_once(':').expect("`n frac seed: indices`");
            let head: Vec<&str> = head.split_whitespace().collect();
            let (n, frac, seed): (usize, f64, u64) =
                (head[0].parse().unwrap(), head[1].parse().unwrap(), head[2].parse().unwrap());
            let want: Vec<usize> = indices.split_whitespace().map(|i| i.parse().unwrap()).collect();
            // The sample order itself: the permutation's first k.
            let order = legacy_permutation(n, &mut Mt19937::new(seed as u32));
            assert_eq!(order[..want.len()], want[..], "n={n} frac={frac} seed={seed}");
            // And the split made from it.
            let s = pandas_split(n, 1.0 - frac, seed).unwrap();
            let mut sorted = want.clone();
            sorted.sort_unstable();
            assert_eq!(s.train, sorted, "n={n} frac={frac} seed={seed}");
            assert_eq!(s.train.len() + s.valid.len(), n);
            cases += 1;
        }
        assert!(cases >= 5, "the fixture holds {cases} cases");
    }

    #[test]
    fn pandas_split_refuses_what_numpy_refuses() {
        assert!(pandas_split(10, 0.1, 1 << 32).unwrap_err().to_string().contains("4294967295"));
        assert!(pandas_split(1, 0.5, 0).is_err());
    }

    fn synthetic(n: usize) -> (Dataset, Layout) {
        let items =
            (0..n).map(|index| Item { source: Source::Synthetic { index }, label: (index % 2) as u32 }).collect();
        let cfg = crate::SyntheticConfig { classes: 2, images: n, width: 8, height: 8, seed: 0 };
        (Dataset { classes: vec!["a".into(), "b".into()], items, synthetic: Some(cfg) }, Layout::Synthetic(cfg))
    }

    fn config(layout: Layout, method: SplitMethod) -> DataConfig {
        DataConfig { layout, valid_fraction: 0.25, split_seed: 3, skip_bad_images: false, split_method: method }
    }

    #[test]
    fn a_written_split_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (dataset, layout) = synthetic(12);
        for folds in [None, Some(3)] {
            let made = make_splits(&dataset, &config(layout.clone(), SplitMethod::Shuffle), folds, false).unwrap();
            let ids = item_ids(&dataset, &layout);
            let path = dir.path().join("split.csv");
            std::fs::write(&path, split_csv(&ids, &made, folds.is_some()).unwrap()).unwrap();
            let read = make_splits(&dataset, &config(layout.clone(), SplitMethod::File(path)), folds, false).unwrap();
            assert_eq!(read, made);
            assert_eq!(split_hash(&read), split_hash(&made));
        }
    }

    #[test]
    fn a_bad_split_file_is_one_line_naming_the_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let (dataset, layout) = synthetic(4);
        let all = |rows: &str| format!("id,set\n0,train\n1,valid\n2,train\n{rows}");
        let cases: &[(&str, Option<usize>, &str)] = &[
            ("name,set\n", None, "ROOT:1: the header must be `id,set` or `id,set,fold`, got `name,set`"),
            (&all("3,train\n9,valid\n"), None, "ROOT:6: unknown id `9`: no image of the data set has it"),
            (&all("3,train\n1,train\n"), None, "ROOT:6: duplicate id `1` (first on line 3)"),
            (&all("3,test\n"), None, "ROOT:5: set must be `train` or `valid`, got `test`"),
            (&all(""), None, "ROOT: 1 of the data set's 4 images missing, the first `3`: every image needs a row"),
            ("id,set\n0,valid\n1,valid\n2,valid\n3,valid\n", None, "ROOT: no image is in the train set: both sets need an image"),
            (&all("3,train,1\n"), None, "ROOT:5: expected 2 fields (id,set), got 3"),
            ("id,set,fold\n0,train,0\n", None, "ROOT:1: the file has a `fold` column but the sweep file sets no `folds`: set [data] folds to its number of folds"),
            (&all("3,train\n"), Some(2), "ROOT:1: [data] folds = 2 needs a `fold` column (`id,set,fold`, one row per image and fold)"),
            ("id,set,fold\n0,train,2\n", Some(2), "ROOT:2: fold must be a whole number from 0 to 1 ([data] folds = 2), got `2`"),
            (
                "id,set,fold\n0,train,0\n1,valid,0\n2,train,0\n3,train,0\n0,valid,1\n1,train,1\n2,train,1\n",
                Some(2),
                "ROOT: 1 of the data set's 4 images missing from fold 1, the first `3`: every image needs a row",
            ),
        ];
        let path = dir.path().join("split.csv");
        for (text, folds, want) in cases {
            std::fs::write(&path, text).unwrap();
            let err = make_splits(&dataset, &config(layout.clone(), SplitMethod::File(path.clone())), *folds, false)
                .unwrap_err()
                .to_string()
                .replace(&path.display().to_string(), "ROOT");
            assert_eq!(err, *want, "{text:?}");
        }
        // Lenient: ids the data set lacks (images `skip_bad_images` left out) are passed over.
        std::fs::write(&path, all("3,train\n9,valid\n")).unwrap();
        let s = make_splits(&dataset, &config(layout, SplitMethod::File(path)), None, true).unwrap();
        assert_eq!(s, [Split { train: vec![0, 2, 3], valid: vec![1] }]);
    }

    #[test]
    fn ids_are_the_kaggle_id_and_the_path_under_a_folder_root() {
        let root = PathBuf::from("/data/dogs");
        let dataset = Dataset {
            classes: vec!["a".into(), "b".into()],
            items: vec![
                Item { source: Source::File(root.join("pug").join("x.1.jpg")), label: 0 },
                Item { source: Source::File(root.join("train").join("abc.def.jpg")), label: 1 },
            ],
            synthetic: None,
        };
        assert_eq!(item_ids(&dataset, &Layout::Folder { root: root.clone() }), ["pug/x.1.jpg", "train/abc.def.jpg"]);
        assert_eq!(item_ids(&dataset, &Layout::Kaggle { root }), ["x.1", "abc.def"]);
    }
}
