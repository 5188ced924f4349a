//! A sweep's results, typed, over the store: what `sweep table`, `sweep
//! plot`, `sweep export`, `sweep importance` and `sweep serve` show. They only render;
//! every number and every grouping is made here, once.
//!
//! This crate reads the store and nothing else: no Candle, no clap, no
//! tokio. It knows no sweep-file vocabulary either: a job's settings are the
//! JSON object the scheduler recorded, and the keys that change only speed
//! (which make two jobs "the same") are handed in by the caller. The one
//! word it reads from a sweep's recorded canonical spec is its objective
//! (`search.objective`, absent for the default, `valid_acc`).

mod folds;
mod importance;
mod job;
mod split;
#[cfg(test)]
mod tests;
mod views;

use std::collections::HashMap;

pub use folds::FoldGroup;
pub use importance::{Importance, KeyImportance, MAX_LEVELS};
pub use job::{Job, Value};
pub use split::SplitInfo;
use sweep_store::{EpochRow, FeatureRun, Store, SweepRow};
pub use views::{Checkpoint, JobDetail, Progress, Trial, LOG_SPAN};

/// The paper's five hyperparameters, the first columns of every table, in
/// its order.
pub const PAPER_KEYS: [&str; 5] = ["batch_size", "workers", "lr", "momentum", "epochs"];

/// What ranks a sweep's jobs ("best"): the sweep file's `[search] objective`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The best validation accuracy, maximised (the default).
    #[default]
    ValidAcc,
    /// The lowest validation loss, minimised.
    ValidLoss,
    /// The lowest training loss, minimised.
    TrainLoss,
}

impl Objective {
    /// The objective a sweep's canonical spec (`sweeps.spec_json`) records;
    /// the default when it records none.
    pub fn of_spec(spec_json: &str) -> Objective {
        let spec: serde_json::Value = serde_json::from_str(spec_json).unwrap_or_default();
        match spec.pointer("/search/objective").and_then(serde_json::Value::as_str) {
            Some("valid_loss") => Objective::ValidLoss,
            Some("train_loss") => Objective::TrainLoss,
            _ => Objective::ValidAcc,
        }
    }

    /// The objective as a sweep file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Objective::ValidAcc => "valid_acc",
            Objective::ValidLoss => "valid_loss",
            Objective::TrainLoss => "train_loss",
        }
    }

    /// The column (a [`Job::SORT_KEYS`] key) that holds each job's score.
    pub fn column(self) -> &'static str {
        match self {
            Objective::ValidAcc => "best_valid_acc",
            Objective::ValidLoss => "best_valid_loss",
            Objective::TrainLoss => "best_train_loss",
        }
    }

    /// Whether higher is better.
    pub fn maximised(self) -> bool {
        self == Objective::ValidAcc
    }
}

/// What can go wrong reading results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sweep_store::Error),
    /// A sort key that is not a column.
    #[error("no such column: {key} (one of {})", known.join(", "))]
    UnknownKey {
        /// What was asked for.
        key: String,
        /// What exists.
        known: Vec<&'static str>,
    },
}

/// One sweep's jobs, in expansion order until sorted.
#[derive(Debug, Clone)]
pub struct SweepResults {
    /// The sweep.
    pub sweep: SweepRow,
    /// Its jobs.
    pub jobs: Vec<Job>,
    /// Its features, once a run has computed or found them.
    pub features: Option<Features>,
    /// What ranks its jobs.
    pub objective: Objective,
}

/// Where a sweep's features came from, and what the backbone pass cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Images the features cover.
    pub images: i64,
    /// Whether this sweep's last run found them in the cache.
    pub reused: bool,
    /// The backbone pass that computed them (this sweep's or another's), if
    /// the database recorded it.
    pub pass: Option<FeatureRun>,
}

impl Features {
    /// The features of `sweep`'s last run, with the pass that computed them.
    pub fn of(store: &Store, sweep: &SweepRow) -> Result<Option<Features>, Error> {
        let Some(last) = store.feature_runs(&sweep.id)?.pop() else { return Ok(None) };
        let pass = store.feature_pass(&last.cache_key)?;
        Ok(Some(Features { images: last.images, reused: last.reused, pass }))
    }

    /// Each job's share of the backbone pass that `sweep_id` ran itself,
    /// over its `jobs` jobs: the pass's seconds divided among them; 0 when
    /// the features came from the cache (another sweep paid for them);
    /// `None` when the pass was not timed.
    pub fn share_per_job(&self, sweep_id: &str, jobs: usize) -> Option<f64> {
        if self.reused {
            return Some(0.0);
        }
        let pass = self.pass.as_ref().filter(|p| p.sweep_id == sweep_id)?;
        Some(pass.seconds? / jobs.max(1) as f64)
    }

    /// Images per second of the backbone pass, when it was timed.
    pub fn images_per_second(&self) -> Option<f64> {
        let pass = self.pass.as_ref()?;
        pass.seconds.filter(|s| *s > 0.0).map(|s| pass.images as f64 / s)
    }
}

impl SweepResults {
    /// Reads a sweep's jobs. Jobs whose settings are equal once the
    /// `speed_only` keys are removed get `same_as`: the first such job's id.
    pub fn load(store: &Store, sweep: SweepRow, speed_only: &[&str]) -> Result<SweepResults, Error> {
        let rows = store.jobs(&sweep.id)?;
        let mut pruned: HashMap<String, sweep_store::PruneRow> =
            store.prune_decisions(&sweep.id)?.into_iter().map(|p| (p.job_id.clone(), p)).collect();
        let mut first_of: HashMap<String, String> = HashMap::new();
        let jobs: Vec<Job> = rows
            .into_iter()
            .map(|row| {
                let mut job = Job::new(row);
                job.pruned = pruned.remove(&job.row.id);
                let key = job.results_key(speed_only);
                let first = first_of.entry(key).or_insert_with(|| job.row.id.clone());
                if *first != job.row.id {
                    job.same_as = Some(first.clone());
                }
                job
            })
            .collect();
        let mut jobs: Vec<Job> = jobs;
        // A job linked to the job trained for it (never trained itself) shows that job's results.
        for (copy, trained) in store.same_as_links(&sweep.id)? {
            let Some(from) = jobs.iter().find(|j| j.row.id == trained).map(|j| j.row.clone()) else { continue };
            if let Some(job) = jobs.iter_mut().find(|j| j.row.id == copy) {
                let row = &mut job.row;
                row.final_train_acc = from.final_train_acc;
                row.best_valid_loss = from.best_valid_loss;
                row.best_train_loss = from.best_train_loss;
                row.epochs_done = from.epochs_done;
                job.trained_as = Some(trained);
            }
        }
        let features = Features::of(store, &sweep)?;
        let objective = Objective::of_spec(&sweep.spec_json);
        Ok(SweepResults { sweep, jobs, features, objective })
    }

    /// Whether the sweep is a k-fold one (its jobs carry a `fold`).
    pub fn is_kfold(&self) -> bool {
        self.jobs.iter().any(|j| j.fold().is_some())
    }

    /// The job with the best score under the sweep's objective (the highest
    /// best valid accuracy by default; the first of equals, in the current
    /// order); `None` while no job has an epoch. A pruned job is the best
    /// only when no other job has a score: it stopped because it was behind.
    pub fn best(&self) -> Option<&Job> {
        let not_pruned = |j: &&Job| !j.row.status.stopped_early();
        self.best_of(self.jobs.iter().filter(not_pruned)).or_else(|| self.best_of(self.jobs.iter()))
    }

    fn best_of<'a>(&self, jobs: impl Iterator<Item = &'a Job>) -> Option<&'a Job> {
        let objective = self.objective;
        jobs.filter_map(|j| Some((j, j.score(objective)?)))
            .fold(None, |best, (j, x)| match best {
                Some((b, y)) if (objective.maximised() && y >= x) || (!objective.maximised() && y <= x) => Some((b, y)),
                _ => Some((j, x)),
            })
            .map(|(j, _)| j)
    }

    /// Sorts the jobs by the objective, best first (stably): the jobs that
    /// ran on, then the pruned ones (their scores are of fewer epochs), then
    /// those without a score.
    pub fn sort_by_objective(&mut self) {
        // A column of SORT_KEYS: never refused.
        let _ = self.sort_by(self.objective.column());
        let objective = self.objective;
        self.jobs.sort_by_key(|j| match (j.row.status, j.score(objective)) {
            (_, None) => 2,
            (status, _) if status.stopped_early() => 1,
            _ => 0,
        });
    }

    /// How many jobs the pruner stopped (pruned, or waiting at a rung).
    pub fn pruned_count(&self) -> usize {
        self.jobs.iter().filter(|j| j.row.status.stopped_early()).count()
    }

    /// How many jobs repeat another's results (`same_as` set).
    pub fn same_as_count(&self) -> usize {
        self.jobs.iter().filter(|j| j.same_as.is_some()).count()
    }

    /// How many jobs were not trained, taking the result of the job in `same_as`.
    pub fn trained_once_count(&self) -> usize {
        self.jobs.iter().filter(|j| j.trained_as.is_some()).count()
    }

    /// The settings whose values differ between jobs: the paper's five in
    /// its order, then the others by name. `fold` is not a setting.
    pub fn varying_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for job in &self.jobs {
            for key in job.config.keys() {
                if key != "fold" && !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        keys.retain(|k| self.jobs.iter().any(|j| j.config.get(k) != self.jobs[0].config.get(k)));
        keys.sort_by_key(|k| (PAPER_KEYS.iter().position(|p| p == k).unwrap_or(PAPER_KEYS.len()), k.clone()));
        keys
    }

    /// Sorts the jobs by a column (`Job::SORT_KEYS`) or a setting, stably:
    /// accuracies best first, everything else ascending (losses too, best
    /// first), missing values last.
    pub fn sort_by(&mut self, key: &str) -> Result<(), Error> {
        let setting = key != "fold" && self.jobs.iter().any(|j| j.config.contains_key(key));
        if !Job::SORT_KEYS.contains(&key) && !setting {
            return Err(Error::UnknownKey { key: key.to_owned(), known: Job::SORT_KEYS.to_vec() });
        }
        let descending = matches!(key, "best_valid_acc" | "final_train_acc");
        self.jobs.sort_by(|a, b| {
            let (x, y) = (a.sort_value(key), b.sort_value(key));
            match (x, y) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, _) => std::cmp::Ordering::Greater,
                (_, None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) if descending => y.cmp(&x),
                (Some(x), Some(y)) => x.cmp(&y),
            }
        });
        Ok(())
    }

    /// A k-fold sweep's configurations: one group per configuration, its
    /// folds together, in the order the configurations first appear.
    pub fn folds(&self) -> Vec<FoldGroup<'_>> {
        folds::groups(&self.jobs)
    }

    /// Each job that has recorded epochs, with them (the learning curves).
    pub fn curves(&self, store: &Store) -> Result<Vec<(&Job, Vec<EpochRow>)>, Error> {
        let mut out = Vec::new();
        for job in &self.jobs {
            let epochs = store.epochs(&job.row.id)?;
            if !epochs.is_empty() {
                out.push((job, epochs));
            }
        }
        Ok(out)
    }
}
