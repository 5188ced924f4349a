//! Which hyperparameter matters: a first-order variance decomposition of the
//! objective (best valid accuracy) over a sweep's finished jobs.
//!
//! For each key that varies, the jobs are grouped by the key's value (a
//! numeric key with more than [`MAX_LEVELS`] distinct values is cut into
//! that many bins of equal job counts, by rank) and the score is
//!
//! ```text
//! S_k = Σ_g n_g (ȳ_g − ȳ)² / Σ_i (y_i − ȳ)²
//! ```
//!
//! the share of the objective's variance explained by the key's marginal
//! means: Sobol's first-order index estimated from binned marginal means
//! (the correlation ratio η²). On a full grid, where every value of one key
//! meets every combination of the others equally often, this is exactly the
//! main-effect term of the functional ANOVA decomposition (fANOVA) of the
//! grid's mean table. What no single key explains (`1 − Σ S_k`) is
//! interactions and noise. With few jobs per group the scores lean high
//! (a group of one job explains itself): each score carries its group count.

use crate::{Job, SweepResults, Value};

/// Numeric keys with more distinct values than this are binned.
pub const MAX_LEVELS: usize = 8;

/// One key's share of the objective's variance.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyImportance {
    /// The setting.
    pub key: String,
    /// First-order index: the variance of the key's marginal means over the
    /// objective's variance, in [0, 1].
    pub score: f64,
    /// Groups the jobs fell into (distinct values, or bins).
    pub levels: usize,
}

/// The importance of every varying key of a sweep, most important first.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    /// What is explained.
    pub objective: &'static str,
    /// Finished jobs with an objective, the sample.
    pub jobs: usize,
    /// The objective's variance over them.
    pub variance: f64,
    /// One entry per varying key, highest score first (then by name).
    pub keys: Vec<KeyImportance>,
}

impl Importance {
    /// How the scores are made, in one line (for the page and `--format json`).
    pub const METHOD: &'static str =
        "first-order variance decomposition (Sobol main effects from binned marginal means, \
         = fANOVA main effects on a full grid) of best_valid_acc over done jobs";

    /// The part of the variance no single key explains: interactions and noise.
    pub fn unexplained(&self) -> f64 {
        (1.0 - self.keys.iter().map(|k| k.score).sum::<f64>()).max(0.0)
    }
}

impl SweepResults {
    /// Each varying key's first-order importance for the best valid accuracy
    /// of the done jobs (see the module's documentation). Keys score 0 when
    /// fewer than two jobs are done or the objective does not vary.
    pub fn importance(&self) -> Importance {
        let done: Vec<&Job> = self
            .jobs
            .iter()
            .filter(|j| j.row.status == sweep_store::Status::Done && j.row.best_valid_acc.is_some_and(f64::is_finite))
            .collect();
        let ys: Vec<f64> = done.iter().filter_map(|j| j.row.best_valid_acc).collect();
        let n = ys.len() as f64;
        let mean = if ys.is_empty() { 0.0 } else { ys.iter().sum::<f64>() / n };
        let total: f64 = ys.iter().map(|y| (y - mean).powi(2)).sum();
        let mut keys: Vec<KeyImportance> = self
            .varying_keys()
            .into_iter()
            .map(|key| {
                let groups = groups(&done, &key);
                let between: f64 = groups
                    .iter()
                    .map(|g| {
                        let m = g.iter().map(|&i| ys[i]).sum::<f64>() / g.len() as f64;
                        g.len() as f64 * (m - mean).powi(2)
                    })
                    .sum();
                let score =
                    if ys.len() < 2 || total <= f64::EPSILON * n { 0.0 } else { (between / total).clamp(0.0, 1.0) };
                KeyImportance { key, score, levels: groups.len() }
            })
            .collect();
        keys.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        Importance {
            objective: "best_valid_acc",
            jobs: ys.len(),
            variance: if ys.is_empty() { 0.0 } else { total / n },
            keys,
        }
    }
}

/// The indices of `jobs` grouped by their value of `key`: one group per
/// value, or [`MAX_LEVELS`] bins of equal counts (by rank, ties kept
/// together) for a numeric key with more values. A missing value is a group
/// of its own.
fn groups(jobs: &[&Job], key: &str) -> Vec<Vec<usize>> {
    let mut values: Vec<(Option<Value>, usize)> = jobs.iter().enumerate().map(|(i, j)| (j.param(key), i)).collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    let mut distinct: Vec<(Option<Value>, Vec<usize>)> = Vec::new();
    for (v, i) in values {
        match distinct.last_mut() {
            Some((last, members)) if *last == v => members.push(i),
            _ => distinct.push((v, vec![i])),
        }
    }
    let numeric = distinct.iter().all(|(v, _)| matches!(v, Some(Value::Number(_))));
    if !numeric || distinct.len() <= MAX_LEVELS {
        return distinct.into_iter().map(|(_, m)| m).collect();
    }
    // Equal-count bins over the sorted values; a value's jobs never split.
    let per_bin = jobs.len().div_ceil(MAX_LEVELS);
    let mut bins: Vec<Vec<usize>> = vec![Vec::new()];
    for (_, members) in distinct {
        if bins.last().is_some_and(|b| b.len() >= per_bin) {
            bins.push(Vec::new());
        }
        bins.last_mut().expect("one bin").extend(members);
    }
    bins
}
