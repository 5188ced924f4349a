//! Sweep files: parsing (TOML or JSON, one schema), validation that reports
//! every problem at once, and expansion into jobs with stable ids.

mod node;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use node::{Node, Value};
use serde_json::json;
use sweep_worker::{Arch, DType, DataConfig, Layout, Loss, ModelConfig, SyntheticConfig, TrainConfig, Weights};

/// The most jobs a sweep may expand to unless the caller raises the limit.
pub const DEFAULT_MAX_JOBS: u64 = 10_000;

/// A validated sweep file.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// `name`.
    pub name: String,
    /// `[data]`, with `root` resolved against the sweep file's folder.
    pub data: DataConfig,
    /// `[model]`, with a weights path resolved against the sweep file's folder.
    pub model: ModelConfig,
    /// `[data] folds`: k-fold cross-validation, each configuration trained
    /// once per fold (a job per fold), instead of one train/valid split.
    pub folds: Option<usize>,
    /// The canonical JSON of `data` and `model` as written (paths unresolved):
    /// part of every job id.
    canonical_env: serde_json::Value,
    /// The canonical JSON of the whole sweep: the sweep's id.
    canonical: serde_json::Value,
    /// `[train]` with defaults filled in.
    base: TrainParams,
    /// `[grid]`, axes in [`TrainKey::ALL`] order.
    grid: Vec<(TrainKey, Vec<Param>)>,
    /// `[[configs]]`: overrides of `base`, in file order.
    configs: Vec<Vec<(TrainKey, Param)>>,
}

/// One problem in a sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The sweep file.
    pub file: PathBuf,
    /// 1-based line, where known (TOML).
    pub line: Option<usize>,
    /// Dotted key path, such as `grid.lr[2]`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// The train hyperparameters a sweep may set, in canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrainKey {
    /// Mini-batch size of head training.
    BatchSize,
    /// Decode threads for the backbone pass (speed only).
    Workers,
    /// Base learning rate.
    Lr,
    /// SGD momentum.
    Momentum,
    /// Number of epochs.
    Epochs,
    /// The optimizer (`sgd`).
    Optimizer,
    /// L2 penalty added to the gradient.
    WeightDecay,
    /// StepLR step size in epochs.
    StepSize,
    /// StepLR factor.
    Gamma,
    /// Seed of head init and shuffling.
    Seed,
    /// `cross_entropy` or `multi_margin`.
    Loss,
}

impl TrainKey {
    /// All keys, in the order of a plan's columns and of grid expansion.
    pub const ALL: [TrainKey; 11] = [
        TrainKey::BatchSize,
        TrainKey::Workers,
        TrainKey::Lr,
        TrainKey::Momentum,
        TrainKey::Epochs,
        TrainKey::Optimizer,
        TrainKey::WeightDecay,
        TrainKey::StepSize,
        TrainKey::Gamma,
        TrainKey::Seed,
        TrainKey::Loss,
    ];

    /// The key as written in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            TrainKey::BatchSize => "batch_size",
            TrainKey::Workers => "workers",
            TrainKey::Lr => "lr",
            TrainKey::Momentum => "momentum",
            TrainKey::Epochs => "epochs",
            TrainKey::Optimizer => "optimizer",
            TrainKey::WeightDecay => "weight_decay",
            TrainKey::StepSize => "step_size",
            TrainKey::Gamma => "gamma",
            TrainKey::Seed => "seed",
            TrainKey::Loss => "loss",
        }
    }

    fn from_name(name: &str) -> Option<TrainKey> {
        TrainKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the key changes only speed, never results.
    pub fn speed_only(self) -> bool {
        self == TrainKey::Workers
    }

    fn parse(self, node: &Node) -> Result<Param, String> {
        let int = |min: i64, max: i64| -> Result<Param, String> {
            match node.value {
                Value::Int(i) if (min..=max).contains(&i) => Ok(Param::Int(i as u64)),
                Value::Int(i) => Err(format!("must be between {min} and {max}, got {i}")),
                Value::BigInt(ref i) => Err(format!("must be between {min} and {max}, got {i}")),
                ref other => Err(format!("must be an integer, got {}", other.type_name())),
            }
        };
        let float = |check: fn(f64) -> bool, rule: &str| -> Result<Param, String> {
            let x = match node.value {
                Value::Float(x) => x,
                Value::Int(i) => i as f64,
                Value::BigInt(ref i) => big_float(i),
                ref other => return Err(format!("must be a number, got {}", other.type_name())),
            };
            if x.is_finite() && check(x) {
                Ok(Param::Float(x))
            } else {
                Err(format!("must be {rule}, got {x}"))
            }
        };
        let choice = |options: &[&'static str]| -> Result<Param, String> {
            match &node.value {
                Value::Str(s) => options
                    .iter()
                    .find(|o| **o == s.as_str())
                    .map(|o| Param::Choice(o))
                    .ok_or_else(|| format!("must be one of {}, got \"{s}\"", quoted(options))),
                other => Err(format!("must be one of {}, got {}", quoted(options), other.type_name())),
            }
        };
        match self {
            TrainKey::BatchSize => int(1, 1 << 20),
            TrainKey::Workers => int(0, 1024),
            TrainKey::Lr => float(|x| x > 0.0, "> 0"),
            TrainKey::Momentum => float(|x| (0.0..1.0).contains(&x), ">= 0 and < 1"),
            TrainKey::Epochs => int(1, 100_000),
            TrainKey::Optimizer => choice(&["sgd"]),
            TrainKey::WeightDecay => float(|x| x >= 0.0, ">= 0"),
            TrainKey::StepSize => int(1, 100_000),
            TrainKey::Gamma => float(|x| x > 0.0 && x <= 1.0, "> 0 and <= 1"),
            TrainKey::Seed => int(0, i64::MAX),
            TrainKey::Loss => choice(&["cross_entropy", "multi_margin"]),
        }
    }
}

/// A whole number past 64 bits as a float (infinite when not decimal).
fn big_float(text: &str) -> f64 {
    let sign = if text.starts_with('-') { -1.0 } else { 1.0 };
    text.replace('_', "").parse().unwrap_or(sign * f64::INFINITY)
}

fn quoted(options: &[&str]) -> String {
    options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ")
}

/// One hyperparameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    /// A whole number.
    Int(u64),
    /// A real number.
    Float(f64),
    /// One of a fixed set of names.
    Choice(&'static str),
}

impl Param {
    fn to_json(self) -> serde_json::Value {
        match self {
            Param::Int(i) => json!(i),
            Param::Float(x) => json!(x),
            Param::Choice(s) => json!(s),
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Int(i) => write!(f, "{i}"),
            Param::Float(x) => write!(f, "{x}"),
            Param::Choice(s) => f.write_str(s),
        }
    }
}

/// The resolved train hyperparameters of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    values: [Param; TrainKey::ALL.len()],
    /// The fold this job validates on, in a k-fold sweep.
    fold: Option<u32>,
}

impl Default for TrainParams {
    /// The paper's best configuration (batch 16, 2 workers, lr 0.01, momentum 0.9, 14 epochs).
    fn default() -> TrainParams {
        TrainParams {
            values: [
                Param::Int(16),
                Param::Int(2),
                Param::Float(0.01),
                Param::Float(0.9),
                Param::Int(14),
                Param::Choice("sgd"),
                Param::Float(0.0),
                Param::Int(15),
                Param::Float(0.1),
                Param::Int(0),
                Param::Choice("cross_entropy"),
            ],
            fold: None,
        }
    }
}

impl TrainParams {
    /// The value of one key.
    pub fn get(&self, key: TrainKey) -> Param {
        self.values[key as usize]
    }

    fn set(&mut self, key: TrainKey, value: Param) {
        self.values[key as usize] = value;
    }

    fn int(&self, key: TrainKey) -> u64 {
        match self.get(key) {
            Param::Int(i) => i,
            other => unreachable!("{} holds {other:?}", key.name()),
        }
    }

    fn float(&self, key: TrainKey) -> f64 {
        match self.get(key) {
            Param::Float(x) => x,
            other => unreachable!("{} holds {other:?}", key.name()),
        }
    }

    /// The fold this job validates on (0-based), in a k-fold sweep.
    pub fn fold(&self) -> Option<usize> {
        self.fold.map(|f| f as usize)
    }

    /// Decode threads for the backbone pass.
    pub fn workers(&self) -> usize {
        self.int(TrainKey::Workers) as usize
    }

    /// The canonical JSON object: every key, sorted.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map: BTreeMap<&str, serde_json::Value> =
            TrainKey::ALL.iter().map(|k| (k.name(), self.get(*k).to_json())).collect();
        if let Some(fold) = self.fold {
            map.insert("fold", json!(fold));
        }
        json!(map)
    }

    /// What the worker needs to train the head.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            batch_size: self.int(TrainKey::BatchSize) as usize,
            lr: self.float(TrainKey::Lr),
            momentum: self.float(TrainKey::Momentum),
            epochs: self.int(TrainKey::Epochs) as usize,
            weight_decay: self.float(TrainKey::WeightDecay),
            step_size: self.int(TrainKey::StepSize) as usize,
            gamma: self.float(TrainKey::Gamma),
            seed: self.int(TrainKey::Seed),
            loss: match self.get(TrainKey::Loss) {
                Param::Choice("multi_margin") => Loss::MultiMargin,
                _ => Loss::CrossEntropy,
            },
        }
    }
}

/// One job of a sweep: an id and its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Stable id: a hash of the canonical data, model and train sections.
    pub id: String,
    /// Resolved hyperparameters.
    pub params: TrainParams,
}

impl SweepSpec {
    /// Reads and validates a sweep file; the format follows the extension.
    pub fn load(path: &Path) -> Result<SweepSpec, SpecErrors> {
        let err = |message: String| {
            SpecErrors(vec![SpecError { file: path.to_owned(), line: None, key: String::new(), message }])
        };
        let src = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => return Err(err("unknown sweep file extension: expected .toml or .json".to_owned())),
        };
        let base_dir = path.parent().unwrap_or(Path::new("."));
        SweepSpec::parse(&src, format, path, base_dir)
    }

    /// Parses and validates sweep file text. `file` names the file in errors;
    /// relative paths inside are resolved against `base_dir`.
    pub fn parse(src: &str, format: Format, file: &Path, base_dir: &Path) -> Result<SweepSpec, SpecErrors> {
        let root = match format {
            Format::Toml => node::from_toml(src),
            Format::Json => node::from_json(src),
        };
        let root = root.map_err(|(message, line)| {
            SpecErrors(vec![SpecError { file: file.to_owned(), line, key: String::new(), message }])
        })?;
        let mut cx = Checker { file: file.to_owned(), errors: Vec::new() };
        let spec = cx.sweep(&root, base_dir);
        // In file order (the TOML parser hands tables over sorted by key);
        // problems of the whole file, without a line, first.
        cx.errors.sort_by_key(|e| e.line);
        match spec {
            Some(spec) if cx.errors.is_empty() => Ok(spec),
            _ => Err(SpecErrors(cx.errors)),
        }
    }

    /// The sweep's id: a hash of its canonical form (name included).
    pub fn id(&self) -> String {
        short_hash(&self.canonical)
    }

    /// The canonical JSON of the sweep, as the store records it.
    pub fn canonical_json(&self) -> String {
        self.canonical.to_string()
    }

    /// How many jobs [`SweepSpec::jobs`] would return before de-duplication.
    pub fn job_count_upper_bound(&self) -> u64 {
        let grid = if self.grid.is_empty() {
            0
        } else {
            self.grid.iter().fold(1u64, |acc, (_, values)| acc.saturating_mul(values.len() as u64))
        };
        let configs = self.configs.len() as u64;
        let points = if grid == 0 && configs == 0 { 1 } else { grid.saturating_add(configs) };
        points.saturating_mul(self.folds.unwrap_or(1) as u64)
    }

    /// Expands the sweep into jobs: the grid's cartesian product (last axis
    /// fastest, axes in [`TrainKey::ALL`] order), then the listed configs,
    /// without duplicates; with `folds = k`, each of them k times, one job per
    /// fold. Refused past `max_jobs`.
    pub fn jobs(&self, max_jobs: u64) -> Result<Vec<Job>, TooManyJobs> {
        let count = self.job_count_upper_bound();
        if count > max_jobs {
            return Err(TooManyJobs { count, limit: max_jobs });
        }
        let mut jobs: Vec<Job> = Vec::with_capacity(count as usize);
        let mut seen = std::collections::HashSet::new();
        let mut push = |params: TrainParams| {
            for fold in 0..self.folds.unwrap_or(1) {
                let params = TrainParams { fold: self.folds.map(|_| fold as u32), ..params.clone() };
                let id = self.job_id(&params);
                if seen.insert(id.clone()) {
                    jobs.push(Job { id, params });
                }
            }
        };
        if !self.grid.is_empty() {
            let mut index = vec![0usize; self.grid.len()];
            'outer: loop {
                let mut params = self.base.clone();
                for ((key, values), i) in self.grid.iter().zip(&index) {
                    params.set(*key, values[*i]);
                }
                push(params);
                for axis in (0..index.len()).rev() {
                    index[axis] += 1;
                    if index[axis] < self.grid[axis].1.len() {
                        continue 'outer;
                    }
                    index[axis] = 0;
                }
                break;
            }
        }
        for overrides in &self.configs {
            let mut params = self.base.clone();
            for (key, value) in overrides {
                params.set(*key, *value);
            }
            push(params);
        }
        if self.grid.is_empty() && self.configs.is_empty() {
            push(self.base.clone());
        }
        Ok(jobs)
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

/// A sweep that would expand past the job limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the sweep expands to {count} jobs, more than the limit of {limit} (raise it with --max-jobs)")]
pub struct TooManyJobs {
    /// Jobs the sweep would make.
    pub count: u64,
    /// The limit in force.
    pub limit: u64,
}

/// The format of a sweep file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

/// 16 hex digits of BLAKE3 over canonical JSON (serde_json sorts object keys).
fn short_hash(value: &serde_json::Value) -> String {
    let hash = blake3::hash(value.to_string().as_bytes());
    hash.to_hex()[..16].to_owned()
}

/// Walks the tree, collecting every problem.
struct Checker {
    file: PathBuf,
    errors: Vec<SpecError>,
}

/// The entries of one table, with the keys not yet taken.
struct Table<'a> {
    path: String,
    entries: Vec<(&'a str, Option<usize>, &'a Node)>,
    line: Option<usize>,
}

impl<'a> Table<'a> {
    /// The line of a key's value, before it is taken.
    fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.iter().find(|(k, _, _)| *k == key).and_then(|(_, line, node)| node.line.or(*line))
    }

    fn take(&mut self, key: &str) -> Option<&'a Node> {
        let pos = self.entries.iter().position(|(k, _, _)| *k == key)?;
        Some(self.entries.remove(pos).2)
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl Checker {
    fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(SpecError { file: self.file.clone(), line, key: key.into(), message: message.into() });
    }

    fn table<'a>(&mut self, path: &str, node: &'a Node) -> Option<Table<'a>> {
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
    fn finish(&mut self, table: Table<'_>, known: &[&str]) {
        for (key, line, _) in &table.entries {
            let hint = closest(key, known).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            self.error(*line, table.key(key), format!("unknown key{hint}"));
        }
    }

    fn string(&mut self, table: &mut Table<'_>, key: &str) -> Option<String> {
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

    fn int(&mut self, table: &mut Table<'_>, key: &str, min: i64, max: i64) -> Option<u64> {
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

    fn number(&mut self, node: &Node, key: &str, check: fn(f64) -> bool, rule: &str) -> Option<f64> {
        let x = match node.value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            Value::BigInt(ref i) => big_float(i),
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
                    .map(|(i, item)| self.number(item, &format!("{key}[{i}]"), check, rule))
                    .collect();
                Some([values[0]?, values[1]?, values[2]?])
            }
            Value::Array(items) => {
                self.error(node.line, key, format!("must have 3 values (R, G, B), got {}", items.len()));
                None
            }
            other => {
                self.error(node.line, key, format!("must be an array of 3 numbers, got {}", other.type_name()));
                None
            }
        }
    }

    fn sweep(&mut self, root: &Node, base_dir: &Path) -> Option<SweepSpec> {
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
        let mut base_written = BTreeMap::new();
        if let Some(node) = top.take("train") {
            for (key, value) in self.overrides("train", node) {
                base.set(key, value);
                base_written.insert(key.name(), value.to_json());
            }
        }
        let grid = match top.take("grid") {
            Some(node) => self.grid(node),
            None => Vec::new(),
        };
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
        self.finish(top, &["name", "data", "model", "train", "grid", "configs"]);

        let (name, (data, data_json, folds), (model, model_json)) = (name?, data?, model?);
        let canonical_env = json!({ "data": data_json, "model": model_json });
        let grid_json: BTreeMap<&str, Vec<serde_json::Value>> =
            grid.iter().map(|(k, vs)| (k.name(), vs.iter().map(|v| v.to_json()).collect())).collect();
        let configs_json: Vec<serde_json::Value> = configs
            .iter()
            .map(|c| {
                let map: BTreeMap<&str, serde_json::Value> = c.iter().map(|(k, v)| (k.name(), v.to_json())).collect();
                json!(map)
            })
            .collect();
        let canonical = json!({
            "name": name,
            "data": canonical_env["data"],
            "model": canonical_env["model"],
            "train": base.to_json(),
            "grid": grid_json,
            "configs": configs_json,
        });
        Some(SweepSpec { name, data, model, folds, canonical_env, canonical, base, grid, configs })
    }

    fn data(&mut self, node: &Node, base_dir: &Path) -> Option<(DataConfig, serde_json::Value, Option<usize>)> {
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
        let split_seed = self.int(&mut t, "split_seed", 0, i64::MAX);
        let line = t.line;
        let mut json = BTreeMap::new();
        let layout = match layout.as_deref() {
            Some(kind @ ("kaggle" | "folder")) => {
                let Some(root) = root else {
                    if !self.errors.iter().any(|e| e.key == "data.root") {
                        self.error(
                            line,
                            "data.root",
                            format!("missing: the {kind} layout needs the folder of the images"),
                        );
                    }
                    self.finish(t, &["layout", "root", "valid_fraction", "split_seed", "folds"]);
                    return None;
                };
                json.insert("root", json!(root));
                let resolved = base_dir.join(&root);
                if kind == "kaggle" {
                    Layout::Kaggle { root: resolved }
                } else {
                    Layout::Folder { root: resolved }
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
                json.insert("classes", json!(classes));
                json.insert("images", json!(images));
                json.insert("width", json!(width));
                json.insert("height", json!(height));
                json.insert("seed", json!(seed));
                Layout::Synthetic(SyntheticConfig { classes, images, width, height, seed })
            }
            Some(other) => {
                self.error(
                    layout_line,
                    "data.layout",
                    format!("must be one of \"kaggle\", \"folder\", \"synthetic\", got \"{other}\""),
                );
                self.finish(
                    t,
                    &[
                        "layout",
                        "root",
                        "valid_fraction",
                        "split_seed",
                        "folds",
                        "classes",
                        "images",
                        "width",
                        "height",
                        "seed",
                    ],
                );
                return None;
            }
            None => {
                if !self.errors.iter().any(|e| e.key == "data.layout") {
                    self.error(line, "data.layout", "missing: one of \"kaggle\", \"folder\", \"synthetic\"");
                }
                self.finish(t, &["layout", "root", "valid_fraction", "split_seed", "folds"]);
                return None;
            }
        };
        let known: &[&str] = if matches!(layout, Layout::Synthetic(_)) {
            &["layout", "valid_fraction", "split_seed", "folds", "classes", "images", "width", "height", "seed"]
        } else {
            &["layout", "root", "valid_fraction", "split_seed", "folds"]
        };
        self.finish(t, known);
        let valid_fraction = valid_fraction.unwrap_or(0.1);
        let split_seed = split_seed.unwrap_or(0);
        json.insert("layout", json!(layout.name()));
        json.insert("valid_fraction", json!(valid_fraction));
        json.insert("split_seed", json!(split_seed));
        if let Some(k) = folds {
            json.insert("folds", json!(k));
        }
        Some((DataConfig { layout, valid_fraction, split_seed }, json!(json), folds))
    }

    fn model(&mut self, node: &Node, base_dir: &Path) -> Option<(ModelConfig, serde_json::Value)> {
        let mut t = self.table("model", node)?;
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
        let mean = self.triple(&mut t, "mean", |_| true, "finite").unwrap_or([0.485, 0.456, 0.406]);
        let std = self.triple(&mut t, "std", |x| x > 0.0, "> 0").unwrap_or([0.229, 0.224, 0.225]);
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
        self.finish(t, &["backbone", "weights", "image_size", "mean", "std", "dtype"]);
        let (arch, (weights_text, weights)) = (arch?, weights?);
        let json = json!({
            "backbone": arch.name(),
            "weights": weights_text,
            "image_size": image_size,
            "mean": mean,
            "std": std,
            "dtype": dtype.name(),
        });
        Some((ModelConfig { arch, weights, image_size, mean, std, dtype }, json))
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
            let path = t.key(key);
            let items: Vec<&Node> = match &value.value {
                Value::Array(items) if items.is_empty() => {
                    self.error(value.line.or(line), &path, "must not be an empty list");
                    continue;
                }
                Value::Array(items) => items.iter().collect(),
                // A single value is a one-point axis.
                _ => vec![value],
            };
            let mut values: Vec<Param> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match train_key.parse(item) {
                    Ok(param) if values.contains(&param) => {
                        self.error(item.line, format!("{path}[{i}]"), format!("repeats the value {param}"))
                    }
                    Ok(param) => values.push(param),
                    Err(msg) => self.error(item.line.or(line), format!("{path}[{i}]"), msg),
                }
            }
            axes.push((train_key, values));
        }
        let known: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
        self.finish(t, &known);
        axes.sort_by_key(|(k, _)| *k);
        axes
    }
}

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

/// The known name closest to a misspelt key, if any is close.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
