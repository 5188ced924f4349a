//! Expansion: a sweep's grid and `[[configs]]` (and folds) into its jobs,
//! refused past the job limit.

use super::keys::TrainParams;
use super::{SweepSpec, TooManyJobs};

/// The most jobs a sweep may expand to unless the caller raises the limit.
pub const DEFAULT_MAX_JOBS: u64 = 10_000;

/// The most a caller may raise the job limit to: a plan is kept in memory
/// whole (a million jobs take about a gigabyte with their store rows), so a
/// bigger sweep is refused whatever limit is asked for.
pub const MAX_JOBS_CEILING: u64 = 1_000_000;

/// One job of a sweep: an id and its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Stable id: a hash of the canonical data, model and train sections.
    pub id: String,
    /// Resolved hyperparameters.
    pub params: TrainParams,
    /// The trial it was sampled as (0-based), in a random or Sobol search.
    pub trial: Option<u64>,
}

impl SweepSpec {
    /// How many jobs [`SweepSpec::jobs`] would return before de-duplication,
    /// `u64::MAX` when that does not fit in 64 bits.
    pub fn job_count_upper_bound(&self) -> u64 {
        self.job_count().unwrap_or(u64::MAX)
    }

    /// The jobs before de-duplication, with checked arithmetic: `None` past
    /// `u64::MAX`.
    fn job_count(&self) -> Option<u64> {
        let mut grid = if self.grid.is_empty() {
            0
        } else {
            self.grid.iter().try_fold(1u64, |acc, (_, values)| acc.checked_mul(values.len() as u64))?
        };
        if !self.sampled.is_empty() {
            grid = grid.max(1).checked_mul(self.search.trials)?;
        }
        let configs = self.configs.len() as u64;
        let points = if grid == 0 && configs == 0 { 1 } else { grid.checked_add(configs)? };
        points.checked_mul(self.folds.unwrap_or(1) as u64)
    }

    /// Expands the sweep into jobs: the grid's cartesian product (last axis
    /// fastest, axes in [`TrainKey::ALL`](super::TrainKey::ALL) order), in a
    /// search once per trial (trial outermost, each trial's sampled values
    /// crossed with the grid), then the listed configs,
    /// without duplicates; with `folds = k`, each of them k times, one job per
    /// fold. Refused, before anything is expanded, past `max_jobs` or past
    /// [`MAX_JOBS_CEILING`], whichever is lower.
    pub fn jobs(&self, max_jobs: u64) -> Result<Vec<Job>, TooManyJobs> {
        let limit = max_jobs.min(MAX_JOBS_CEILING);
        let count = self.job_count_upper_bound();
        if count > limit {
            return Err(TooManyJobs { count, limit });
        }
        // At most MAX_JOBS_CEILING: a bounded allocation.
        let mut jobs: Vec<Job> = Vec::with_capacity(count as usize);
        let mut seen = std::collections::HashSet::new();
        let mut push = |params: TrainParams, trial: Option<u64>| {
            for fold in 0..self.folds.unwrap_or(1) {
                let mut params = params.clone();
                params.fold = self.folds.map(|_| fold as u32);
                let id = self.job_id(&params);
                if seen.insert(id.clone()) {
                    jobs.push(Job { id, params, trial });
                }
            }
        };
        let trials: Vec<Option<u64>> =
            if self.sampled.is_empty() { vec![None] } else { (0..self.search.trials).map(Some).collect() };
        for trial in trials {
            let mut base = self.base.clone();
            if let Some(i) = trial {
                super::space::sample(&self.search, &self.sampled, i, &mut base);
            }
            if self.grid.is_empty() {
                if trial.is_some() {
                    push(base, trial);
                }
                continue;
            }
            let mut index = vec![0usize; self.grid.len()];
            'outer: loop {
                let mut params = base.clone();
                for ((key, values), i) in self.grid.iter().zip(&index) {
                    params.set(*key, values[*i]);
                }
                push(params, trial);
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
            push(params, None);
        }
        if self.grid.is_empty() && self.configs.is_empty() && self.sampled.is_empty() {
            push(self.base.clone(), None);
        }
        Ok(jobs)
    }
}
