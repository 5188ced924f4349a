//! Sweep files: parsing (TOML or JSON, one schema), validation that reports
//! every problem at once, and expansion into jobs with stable ids.
//!
//! One concern a file:
//! - `node.rs`: TOML or JSON into one neutral tree, with lines;
//! - `keys.rs`: the train keys, their values and defaults ([`TrainKey`],
//!   [`Param`], [`TrainParams`]);
//! - `check.rs`: the tree into typed sections, collecting every problem;
//! - `expand.rs`: grid, configs and folds into [`Job`]s, under the job limit;
//! - `canonical.rs`: the canonical JSON and the sweep and job ids hashed
//!   from it (where a job id is made);
//! - `space.rs`: `[search]` and `[space]`: sampled keys, the objective,
//!   random and scrambled Sobol sampling (trial `i` depends only on the
//!   seed and `i`);
//! - `prune.rs`: `[prune]`, the median rule's or ASHA's settings
//!   ([`Prune`]; the rules themselves are in `crate::pruner`);
//! - `schema.rs`: the file format as wire types, the one declaration of its
//!   keys, and the JSON Schema generated from them ([`json_schema`]);
//! - `error.rs`: [`SpecError`], [`SpecErrors`], [`TooManyJobs`].

mod canonical;
mod check;
mod error;
mod expand;
#[cfg(test)]
mod fuzz;
mod keys;
mod node;
mod prune;
mod schema;
mod space;
#[cfg(test)]
mod tests;

use std::path::Path;

use sweep_worker::{DataConfig, ModelConfig, ModelGiven};

pub use error::{SpecError, SpecErrors, TooManyJobs};
pub use expand::{Job, DEFAULT_MAX_JOBS, MAX_JOBS_CEILING};
pub use keys::{Param, TrainKey, TrainParams};
pub use prune::Prune;
pub use schema::json_schema;
pub use space::{Method, Objective};

/// A validated sweep file.
#[derive(Debug, Clone)]
pub struct SweepSpec {
    /// `name`.
    pub name: String,
    /// `[data]`, with `root` resolved against the sweep file's folder.
    pub data: DataConfig,
    /// `[model]`, with a weights path resolved against the sweep file's folder,
    /// as written (defaults filled in): what the weights file declares is
    /// applied by [`sweep_worker::model_in_force`] before a run.
    pub model: ModelConfig,
    /// Which `[model]` settings the file wrote, and `ignore_weights_metadata`.
    pub model_given: ModelGiven,
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
    /// `[search]`, defaults filled in.
    search: space::Search,
    /// `[space]`'s distributions, in [`TrainKey::ALL`] order.
    sampled: Vec<space::Sampled>,
    /// `[prune]`: early stopping, if any.
    prune: Option<Prune>,
}

/// The format of a sweep file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
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
        let sections = check::check(&root, file, base_dir).map_err(SpecErrors)?;
        let canonical_env = canonical::environment(&sections);
        let canonical = canonical::sweep(&sections, &canonical_env);
        let check::Sections {
            name, data, folds, model, model_given, base, grid, configs, search, sampled, prune, ..
        } = sections;
        Ok(SweepSpec {
            name,
            data,
            model,
            model_given,
            folds,
            canonical_env,
            canonical,
            base,
            grid,
            configs,
            search,
            sampled,
            prune,
        })
    }

    /// How the jobs are chosen: the grid, or sampled trials.
    pub fn method(&self) -> Method {
        self.search.method
    }

    /// What "best" means for this sweep's jobs.
    pub fn objective(&self) -> Objective {
        self.search.objective
    }

    /// `[prune]`: how trials are stopped early, if they are.
    pub fn prune(&self) -> Option<Prune> {
        self.prune
    }
}
