//! Expansion: a sweep's grid and `[[configs]]` (and folds) into its jobs,
//! refused past the job limit.

use super::keys::TrainParams;
use super::{SweepSpec, TooManyJobs};

/// The most jobs a sweep may expand to unless the caller raises the limit.
pub const DEFAULT_MAX_JOBS: u64 = 10_000;

/// One job of a sweep: an id and its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Stable id: a hash of the canonical data, model and train sections.
    pub id: String,
    /// Resolved hyperparameters.
    pub params: TrainParams,
}

impl SweepSpec {
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
    /// fastest, axes in [`TrainKey::ALL`](super::TrainKey::ALL) order), then the listed configs,
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
                let mut params = params.clone();
                params.fold = self.folds.map(|_| fold as u32);
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
}
