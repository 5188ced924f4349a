//! Validation: walks the neutral tree of a sweep file into typed sections,
//! collecting **every** problem with its key and line rather than stopping at
//! the first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sweep_worker::{
    Arch, ChannelOrder, DType, DataConfig, FeatureDType, Layout, ModelConfig, ModelGiven, SplitMethod, SyntheticConfig,
    Weights,
};

use super::keys::{big_float, quoted, Param, TrainKey, TrainParams};
use super::node::{Node, Value};
use super::SpecError;
use super::{schema, space};

/// A sweep file's sections, checked and typed.
pub(super) struct Sections {
    /// `name`.
    pub(super) name: String,
    /// `[data]`, with `root` resolved against the sweep file's folder.
    pub(super) data: DataConfig,
    /// `[data] root` as written (kaggle and folder layouts).
    pub(super) root: Option<String>,
    /// `[data] folds`.
    pub(super) folds: Option<usize>,
    /// `[data] split` as written (a split file).
    pub(super) split: Option<String>,
    /// `[model]`, with a weights path resolved against the sweep file's folder.
    pub(super) model: ModelConfig,
    /// `[model] weights` as written.
    pub(super) weights: String,
    /// Which `[model]` settings were written (the rest are defaults).
    pub(super) model_given: ModelGiven,
    /// `[train]` with defaults filled in.
    pub(super) base: TrainParams,
    /// `[grid]`, axes in [`TrainKey::ALL`] order.
    pub(super) grid: Vec<(TrainKey, Vec<Param>)>,
    /// `[[configs]]`: overrides of `base`, in file order.
    pub(super) configs: Vec<Vec<(TrainKey, Param)>>,
    /// `[search]`, defaults filled in (`space.rs`).
    pub(super) search: space::Search,
    /// `[space]`'s distributions, in [`TrainKey::ALL`] order.
    pub(super) sampled: Vec<space::Sampled>,
    /// `[prune]`.
    pub(super) prune: Option<super::Prune>,
}

/// Checks the tree of `file`, resolving relative paths against `base_dir`:
/// the sections, or every problem in file order (those without a line first).
pub(super) fn check(root: &Node, file: &Path, base_dir: &Path) -> Result<Sections, Vec<SpecError>> {
    let mut cx = Checker { file: file.to_owned(), errors: Vec::new() };
    let sections = cx.sweep(root, base_dir);
    // In file order (the TOML parser hands tables over sorted by key);
    // problems of the whole file, without a line, first.
    cx.errors.sort_by_key(|e| e.line);
    match sections {
        Some(sections) if cx.errors.is_empty() => Ok(sections),
        _ => Err(cx.errors),
    }
}

/// Walks the tree, collecting every problem.
pub(super) struct Checker {
    file: PathBuf,
    errors: Vec<SpecError>,
}

/// The entries of one table, with the keys not yet taken.
pub(super) struct Table<'a> {
    path: String,
    pub(super) entries: Vec<(&'a str, Option<usize>, &'a Node)>,
    pub(super) line: Option<usize>,
}

impl<'a> Table<'a> {
    /// The line of a key's value, before it is taken.
    pub(super) fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.iter().find(|(k, _, _)| *k == key).and_then(|(_, line, node)| node.line.or(*line))
    }

    pub(super) fn take(&mut self, key: &str) -> Option<&'a Node> {
        let pos = self.entries.iter().position(|(k, _, _)| *k == key)?;
        Some(self.entries.remove(pos).2)
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl Checker {
    pub(super) fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(SpecError { file: self.file.clone(), line, key: key.into(), message: message.into() });
    }

    pub(super) fn table<'a>(&mut self, path: &str, node: &'a Node) -> Option<Table<'a>> {
        match &node.value {
            Value::Table(entries) => Some(Table {
                path: path.to_owned(),
                entries: entries.iter().map(|(k, line, n)| (k.as_str(), *line, n)).collect(),
                line: node.line,
            }),
            other => {
                self.error(node.line, path, format!("must be a table, got {}", other.type_name()));
                None
            }
        }
    }

    /// Reports every key left in `table` as unknown.
    pub(super) fn finish(&mut self, table: Table<'_>, known: &[impl AsRef<str>]) {
        for (key, line, _) in &table.entries {
            let hint = closest(key, known).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            self.error(*line, table.key(key), format!("unknown key{hint}"));
        }
    }

    pub(super) fn string(&mut self, table: &mut Table<'_>, key: &str) -> Option<String> {
        let node = table.take(key)?;
        match &node.value {
            Value::Str(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Str(_) => {
                self.error(node.line, table.key(key), "must not be empty");
                None
            }
            other => {
                self.error(node.line, table.key(key), format!("must be a string, got {}", other.type_name()));
                None
            }
        }
    }

    fn boolean(&mut self, table: &mut Table<'_>, key: &str) -> Option<bool> {
        let node = table.take(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            ref other => {
                self.error(node.line, table.key(key), format!("must be true or false, got {}", other.type_name()));
                None
            }
        }
    }

    pub(super) fn int(&mut self, table: &mut Table<'_>, key: &str, min: i64, max: i64) -> Option<u64> {
        let node = table.take(key)?;
        match node.value {
            Value::Int(i) if (min..=max).contains(&i) => Some(i as u64),
            Value::Int(i) => {
                self.error(node.line, table.key(key), format!("must be between {min} and {max}, got {i}"));
                None
            }
            Value::BigInt(ref i) => {
                self.error(node.line, table.key(key), format!("must be between {min} and {max}, got {i}"));
                None
            }
            ref other => {
                self.error(node.line, table.key(key), format!("must be an integer, got {}", other.type_name()));
                None
            }
        }
    }

    fn float(&mut self, table: &mut Table<'_>, key: &str, check: fn(f64) -> bool, rule: &str) -> Option<f64> {
        let node = table.take(key)?;
        self.number(node, &table.key(key), check, rule)
    }

    pub(super) fn number(&mut self, node: &Node, key: &str, check: fn(f64) -> bool, rule: &str) -> Option<f64> {
        self.number_or_fraction(node, key, check, rule, false)
    }

    /// A number; with `fractions`, also a fraction in a string (`"1/255"`).
    fn number_or_fraction(
        &mut self,
        node: &Node,
        key: &str,
        check: fn(f64) -> bool,
        rule: &str,
        fractions: bool,
    ) -> Option<f64> {
        let x = match node.value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            Value::BigInt(ref i) => big_float(i),
            // `"1/255"`: TOML has no fractions, so they come quoted.
            Value::Str(ref text) if fractions => match sweep_worker::parse_fraction(text) {
                Some(x) => x,
                None => {
                    self.error(
                        node.line,
                        key,
                        format!("must be a number or a fraction in quotes such as \"1/255\", got \"{text}\""),
                    );
                    return None;
                }
            },
            ref other => {
                self.error(node.line, key, format!("must be a number, got {}", other.type_name()));
                return None;
            }
        };
        if x.is_finite() && check(x) {
            Some(x)
        } else {
            self.error(node.line, key, format!("must be {rule}, got {x}"));
            None
        }
    }

    fn triple(&mut self, table: &mut Table<'_>, key: &str, check: fn(f64) -> bool, rule: &str) -> Option<[f64; 3]> {
        let node = table.take(key)?;
        let key = table.key(key);
        match &node.value {
            Value::Array(items) if items.len() == 3 => {
                let values: Vec<Option<f64>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.number_or_fraction(item, &format!("{key}[{i}]"), check, rule, true))
                    .collect();
                Some([values[0]?, values[1]?, values[2]?])
            }
            Value::Array(items) => {
                self.error(node.line, key, format!("must have 3 values (R, G, B), got {}", items.len()));
                None
            }
            other => {
                self.error(
                    node.line,
                    key,
                    format!(
                        "must be an array of 3 numbers (or fractions such as \"1/255\"), got {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }

    fn sweep(&mut self, root: &Node, base_dir: &Path) -> Option<Sections> {
        let mut top = self.table("", root)?;
        let name = self.string(&mut top, "name");
        if name.is_none() && !self.errors.iter().any(|e| e.key == "name") {
            self.error(None, "name", "missing: every sweep needs a name");
        }
        let data = match top.take("data") {
            Some(node) => self.data(node, base_dir),
            None => {
                self.error(None, "data", "missing: the [data] table says where the images are");
                None
            }
        };
        let model = match top.take("model") {
            Some(node) => self.model(node, base_dir),
            None => {
                self.error(None, "model", "missing: the [model] table names the backbone and its weights");
                None
            }
        };
        let mut base = TrainParams::default();
        let mut taken = Vec::new();
        if let Some(node) = top.take("train") {
            for (key, value) in self.overrides("train", node) {
                base.set(key, value);
                taken.push((key, "train"));
            }
        }
        let mut grid = match top.take("grid") {
            Some(node) => self.grid(node),
            None => Vec::new(),
        };
        taken.extend(grid.iter().map(|(key, _)| (*key, "grid")));
        let (search, space) = (top.take("search"), top.take("space"));
        let search = search.map(|node| self.search(node));
        let space = space.map(|node| self.space(node, &taken));
        self.search_and_space(search.as_ref(), space.as_ref());
        let (search, sampled) = space::merge(search, space, &mut base, &mut grid);
        let prune = top.take("prune").and_then(|node| self.prune(node));
        let mut configs = Vec::new();
        if let Some(node) = top.take("configs") {
            match &node.value {
                Value::Array(items) if items.is_empty() => {
                    self.error(node.line, "configs", "must not be empty");
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        configs.push(self.overrides(&format!("configs[{i}]"), item));
                    }
                }
                other => self.error(
                    node.line,
                    "configs",
                    format!("must be an array of tables ([[configs]]), got {}", other.type_name()),
                ),
            }
        }
        // `$schema` points editors at the JSON Schema; sweep ignores it.
        if let Some(node) = top.take("$schema") {
            if !matches!(node.value, Value::Str(_)) {
                self.error(node.line, "$schema", format!("must be a string, got {}", node.value.type_name()));
            }
        }
        self.finish(top, &schema::keys().top[..]);

        let (name, (data, root, folds, split), (model, weights, model_given)) = (name?, data?, model?);
        Some(Sections {
            name,
            data,
            root,
            folds,
            split,
            model,
            weights,
            model_given,
            base,
            grid,
            configs,
            search,
            sampled,
            prune,
        })
    }

    /// `[data]`, `root` as written, `folds`, and `split` as written.
    #[allow(clippy::type_complexity)]
    fn data(
        &mut self,
        node: &Node,
        base_dir: &Path,
    ) -> Option<(DataConfig, Option<String>, Option<usize>, Option<String>)> {
        let mut t = self.table("data", node)?;
        let layout_line = t.line_of("layout");
        let layout = self.string(&mut t, "layout");
        let root = self.string(&mut t, "root");
        let folds_line = t.line_of("folds");
        let fraction_given = t.entries.iter().any(|e| e.0 == "valid_fraction");
        let folds = self.int(&mut t, "folds", 2, 1000).map(|k| k as usize);
        if folds.is_some() && fraction_given {
            self.error(
                folds_line,
                "data.folds",
                "valid_fraction does not apply with folds: each fold holds out 1/k of the images",
            );
        }
        let valid_fraction = self.float(&mut t, "valid_fraction", |x| x > 0.0 && x < 1.0, "> 0 and < 1");
        let seed_given = t.entries.iter().any(|e| e.0 == "split_seed");
        let (split_method, split) = self.split_keys(
            &mut t,
            folds.is_some(),
            [("valid_fraction", fraction_given), ("split_seed", seed_given)],
            base_dir,
        );
        let split_seed = self.int(&mut t, "split_seed", 0, i64::MAX);
        let line = t.line;
        let mut skip_bad_images = false;
        let (layout, root) = match layout.as_deref() {
            Some(kind @ ("kaggle" | "folder")) => {
                let Some(root) = root else {
                    if !self.errors.iter().any(|e| e.key == "data.root") {
                        self.error(
                            line,
                            "data.root",
                            format!("missing: the {kind} layout needs the folder of the images"),
                        );
                    }
                    self.finish(t, &schema::keys().data(Some(kind))[..]);
                    return None;
                };
                // Files only: generated images are never bad.
                skip_bad_images = self.boolean(&mut t, "skip_bad_images").unwrap_or(false);
                let resolved = base_dir.join(&root);
                if kind == "kaggle" {
                    (Layout::Kaggle { root: resolved }, Some(root))
                } else {
                    (Layout::Folder { root: resolved }, Some(root))
                }
            }
            Some("synthetic") => {
                if root.is_some() {
                    self.error(line, "data.root", "the synthetic layout generates its images and takes no root");
                }
                let classes = self.int(&mut t, "classes", 2, 10_000).unwrap_or(4) as usize;
                let images = self.int(&mut t, "images", 4, 10_000_000).unwrap_or(200) as usize;
                let width = self.int(&mut t, "width", 8, 8192).unwrap_or(64) as u32;
                let height = self.int(&mut t, "height", 8, 8192).unwrap_or(64) as u32;
                let seed = self.int(&mut t, "seed", 0, i64::MAX).unwrap_or(0);
                if images < classes {
                    self.error(line, "data.images", format!("must be at least `classes` ({classes}), got {images}"));
                }
                (Layout::Synthetic(SyntheticConfig { classes, images, width, height, seed }), None)
            }
            Some(other) => {
                self.error(
                    layout_line,
                    "data.layout",
                    format!("must be one of \"kaggle\", \"folder\", \"synthetic\", got \"{other}\""),
                );
                self.finish(t, &schema::keys().data(None)[..]);
                return None;
            }
            None => {
                if !self.errors.iter().any(|e| e.key == "data.layout") {
                    self.error(line, "data.layout", "missing: one of \"kaggle\", \"folder\", \"synthetic\"");
                }
                self.finish(t, &schema::keys().data(None)[..]);
                return None;
            }
        };
        self.finish(t, &schema::keys().data(Some(layout.name()))[..]);
        let valid_fraction = valid_fraction.unwrap_or(0.1);
        let split_seed = split_seed.unwrap_or(0);
        Some((DataConfig { layout, valid_fraction, split_seed, skip_bad_images, split_method }, root, folds, split))
    }

    /// `split` (a split file, resolved against `base_dir`, and as written)
    /// and `split_method`, with the keys that do not apply beside them.
    fn split_keys(
        &mut self,
        t: &mut Table<'_>,
        folds: bool,
        others: [(&str, bool); 2],
        base_dir: &Path,
    ) -> (SplitMethod, Option<String>) {
        let (split_line, method_line) = (t.line_of("split"), t.line_of("split_method"));
        let method_given = t.entries.iter().any(|e| e.0 == "split_method");
        let split = self.string(t, "split");
        let method = match self.string(t, "split_method").as_deref() {
            None | Some("shuffle") => SplitMethod::Shuffle,
            Some("pandas") => SplitMethod::Pandas,
            Some(other) => {
                self.error(
                    method_line,
                    "data.split_method",
                    format!("must be one of \"shuffle\", \"pandas\", got \"{other}\""),
                );
                SplitMethod::Shuffle
            }
        };
        if method == SplitMethod::Pandas && folds {
            self.error(method_line, "data.split_method", "\"pandas\" makes one train/valid split, not folds");
        }
        let Some(text) = split else { return (method, None) };
        for (key, given) in others {
            if given {
                self.error(
                    split_line,
                    "data.split",
                    format!("{key} does not apply with split: the file gives the split"),
                );
            }
        }
        if method_given {
            self.error(split_line, "data.split", "split_method does not apply with split: the file gives the split");
        }
        let resolved = base_dir.join(&text);
        (SplitMethod::File(resolved), Some(text))
    }

    /// `[model]`, `weights` as written, and which settings were written.
    fn model(&mut self, node: &Node, base_dir: &Path) -> Option<(ModelConfig, String, ModelGiven)> {
        let mut t = self.table("model", node)?;
        let written = |key: &str| t.entries.iter().any(|e| e.0 == key);
        let mut given = ModelGiven {
            backbone: written("backbone"),
            mean: written("mean"),
            std: written("std"),
            channel_order: written("channel_order"),
            ..ModelGiven::default()
        };
        let wrote = ["mean", "std", "channel_order"].map(written);
        let line = t.line;
        let backbone_node_line = t.line_of("backbone");
        let arch = match self.string(&mut t, "backbone").as_deref() {
            None => Some(Arch::Resnet50),
            Some(name) => {
                let arch = Arch::from_name(name);
                if arch.is_none() {
                    let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                    self.error(
                        backbone_node_line,
                        "model.backbone",
                        format!("must be one of {}, got \"{name}\"", quoted(&names)),
                    );
                }
                arch
            }
        };
        let weights_line = t.line_of("weights");
        let weights = match self.string(&mut t, "weights") {
            None => {
                if !self.errors.iter().any(|e| e.key == "model.weights") {
                    self.error(
                        line,
                        "model.weights",
                        "missing: a .safetensors or .pth file, \"hub:<repo>\", or \"random\"",
                    );
                }
                None
            }
            Some(w) => match parse_weights(&w, base_dir) {
                Ok(weights) => Some((w, weights)),
                Err(msg) => {
                    self.error(weights_line, "model.weights", msg);
                    None
                }
            },
        };
        let image_size = self.int(&mut t, "image_size", 32, 4096).unwrap_or(224) as usize;
        // A preset stands for `mean`, `std` and `channel_order` together.
        let preset_line = t.line_of("preset");
        let preset = match self.string(&mut t, "preset").as_deref() {
            None => None,
            Some(name) => match PRESETS.iter().find(|p| p.0 == name) {
                Some(preset) => Some(*preset),
                None => {
                    let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                    self.error(
                        preset_line,
                        "model.preset",
                        format!("must be one of {}, got \"{name}\"", quoted(&names)),
                    );
                    None
                }
            },
        };
        if preset.is_some() {
            for (key, wrote) in ["mean", "std", "channel_order"].into_iter().zip(wrote) {
                if wrote {
                    self.error(
                        t.line_of(key),
                        format!("model.{key}"),
                        format!("does not apply with preset: the preset sets {key}"),
                    );
                }
            }
            (given.mean, given.std, given.channel_order) = (true, true, true);
        }
        let (preset_mean, preset_std, preset_order) = match preset {
            Some((_, mean, std, order)) => (mean, std, order),
            None => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], ChannelOrder::Rgb),
        };
        let mean = self.triple(&mut t, "mean", |_| true, "finite").unwrap_or(preset_mean);
        let std = self.triple(&mut t, "std", |x| x > 0.0, "> 0").unwrap_or(preset_std);
        let order_line = t.line_of("channel_order");
        let channel_order = match self.string(&mut t, "channel_order").as_deref() {
            None => preset_order,
            Some(name) => ChannelOrder::ALL.into_iter().find(|o| o.name() == name).unwrap_or_else(|| {
                self.error(order_line, "model.channel_order", format!("must be \"rgb\" or \"bgr\", got \"{name}\""));
                ChannelOrder::Rgb
            }),
        };
        let dtype_line = t.line_of("dtype");
        let dtype = match self.string(&mut t, "dtype").as_deref() {
            None | Some("f32") => DType::F32,
            Some("f16") => DType::F16,
            Some("bf16") => DType::BF16,
            Some(other) => {
                self.error(
                    dtype_line,
                    "model.dtype",
                    format!("must be one of \"f32\", \"f16\", \"bf16\", got \"{other}\""),
                );
                DType::F32
            }
        };
        let feature_dtype_line = t.line_of("feature_dtype");
        let feature_dtype = match self.string(&mut t, "feature_dtype").as_deref() {
            None | Some("f32") => FeatureDType::F32,
            Some("f16") => FeatureDType::F16,
            Some(other) => {
                self.error(
                    feature_dtype_line,
                    "model.feature_dtype",
                    format!("must be \"f32\" or \"f16\", got \"{other}\""),
                );
                FeatureDType::F32
            }
        };
        given.ignore_metadata = self.boolean(&mut t, "ignore_weights_metadata").unwrap_or(false);
        given.no_sanity_check = !self.boolean(&mut t, "sanity_check").unwrap_or(true);
        self.finish(t, &schema::keys().model[..]);
        let (arch, (weights_text, weights)) = (arch?, weights?);
        Some((
            ModelConfig { arch, weights, image_size, mean, std, channel_order, dtype, feature_dtype },
            weights_text,
            given,
        ))
    }

    fn overrides(&mut self, path: &str, node: &Node) -> Vec<(TrainKey, Param)> {
        let Some(mut t) = self.table(path, node) else { return Vec::new() };
        let mut out = Vec::new();
        for (key, line, value) in std::mem::take(&mut t.entries) {
            match TrainKey::from_name(key) {
                Some(train_key) => match train_key.parse(value) {
                    Ok(param) => out.push((train_key, param)),
                    Err(msg) => self.error(value.line.or(line), t.key(key), msg),
                },
                None => t.entries.push((key, line, value)),
            }
        }
        let known: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
        self.finish(t, &known);
        out
    }

    fn grid(&mut self, node: &Node) -> Vec<(TrainKey, Vec<Param>)> {
        let Some(mut t) = self.table("grid", node) else { return Vec::new() };
        let mut axes = Vec::new();
        for (key, line, value) in std::mem::take(&mut t.entries) {
            let Some(train_key) = TrainKey::from_name(key) else {
                t.entries.push((key, line, value));
                continue;
            };
            if let Some(values) = self.axis(&t.key(key), train_key, value, line) {
                axes.push((train_key, values));
            }
        }
        let known: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
        self.finish(t, &known);
        axes.sort_by_key(|(k, _)| *k);
        axes
    }
}

impl Checker {
    /// A list of distinct values of `key` (or one value, a one-point list);
    /// `None` when the list is empty.
    pub(super) fn axis(&mut self, path: &str, key: TrainKey, value: &Node, line: Option<usize>) -> Option<Vec<Param>> {
        let items: Vec<&Node> = match &value.value {
            Value::Array(items) if items.is_empty() => {
                self.error(value.line.or(line), path, "must not be an empty list");
                return None;
            }
            Value::Array(items) => items.iter().collect(),
            // A single value is a one-point axis.
            _ => vec![value],
        };
        let mut values: Vec<Param> = Vec::new();
        // Repeats found in linear time: a generated axis may be long.
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            match key.parse(item) {
                Ok(param) if !seen.insert(identity(param)) => {
                    self.error(item.line, format!("{path}[{i}]"), format!("repeats the value {param}"))
                }
                Ok(param) => values.push(param),
                Err(msg) => self.error(item.line.or(line), format!("{path}[{i}]"), msg),
            }
        }
        Some(values)
    }
}

/// `[model] preset`s: a name, and the `mean`, `std` and `channel_order` it
/// stands for (mean and std in that channel order, of pixels in 0-1).
const PRESETS: [(&str, [f64; 3], [f64; 3], ChannelOrder); 2] = [
    ("torchvision", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], ChannelOrder::Rgb),
    // Caffe's and Keras' `preprocess_input(mode="caffe")`: BGR, the mean
    // subtracted from pixels in 0-255, nothing divided.
    ("caffe", [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0], [1.0 / 255.0; 3], ChannelOrder::Bgr),
];

fn parse_weights(text: &str, base_dir: &Path) -> Result<Weights, String> {
    if text == "random" {
        return Ok(Weights::Random { seed: 0 });
    }
    if let Some(seed) = text.strip_prefix("random:") {
        return seed
            .parse()
            .map(|seed| Weights::Random { seed })
            .map_err(|_| format!("\"{text}\": the seed after `random:` must be a whole number"));
    }
    if let Some(repo) = text.strip_prefix("hub:") {
        if repo.is_empty() || !repo.contains('/') {
            return Err(format!("\"{text}\": expected hub:<owner>/<repo>"));
        }
        return Ok(Weights::Hub { repo: repo.to_owned() });
    }
    let path = base_dir.join(text);
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Weights::Safetensors(path)),
        Some("pth" | "pt" | "bin") => Ok(Weights::Pth(path)),
        _ => Err(format!("\"{text}\": expected a .safetensors or .pth file, \"hub:<repo>\", or \"random\"")),
    }
}

/// A hashable stand-in for a value, equal exactly when the values are equal
/// (`0.0` and `-0.0` alike; NaN never gets this far).
fn identity(param: Param) -> (u8, u64, &'static str) {
    match param {
        Param::Int(i) => (0, i, ""),
        Param::Float(x) => (1, if x == 0.0 { 0 } else { x.to_bits() }, ""),
        Param::Choice(s) => (2, 0, s),
    }
}

/// The known name closest to a misspelt key, if any is close.
fn closest<'a>(key: &str, known: &'a [impl AsRef<str>]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k.as_ref()), k.as_ref()))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
