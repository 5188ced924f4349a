//! k-fold summaries: one row per configuration over its folds.

use sweep_store::Status;

use crate::Job;

/// One configuration of a k-fold sweep and its folds.
#[derive(Debug, Clone)]
pub struct FoldGroup<'a> {
    /// Its jobs, one per fold, in expansion order.
    pub members: Vec<&'a Job>,
    /// The best valid accuracy of each finished fold.
    pub accuracies: Vec<f64>,
    /// Their mean, once a fold is done.
    pub mean: Option<f64>,
    /// Their sample standard deviation (n − 1), once two folds are done.
    pub std: Option<f64>,
    /// The most pressing status of its folds: failed, running, interrupted,
    /// pending, done.
    pub status: Status,
    /// Training seconds over its folds.
    pub seconds: f64,
}

impl FoldGroup<'_> {
    /// The first fold's job: it names the configuration.
    pub fn first(&self) -> &Job {
        self.members[0]
    }
}

pub(crate) fn groups(jobs: &[Job]) -> Vec<FoldGroup<'_>> {
    let mut groups: Vec<(String, Vec<&Job>)> = Vec::new();
    for job in jobs {
        let key = job.configuration_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    groups.into_iter().map(|(_, members)| summarise(members)).collect()
}

fn summarise(members: Vec<&Job>) -> FoldGroup<'_> {
    let accuracies: Vec<f64> =
        members.iter().filter(|j| j.row.status == Status::Done).filter_map(|j| j.row.best_valid_acc).collect();
    let n = accuracies.len() as f64;
    let mean = (n > 0.0).then(|| accuracies.iter().sum::<f64>() / n);
    let std =
        mean.filter(|_| n > 1.0).map(|m| (accuracies.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let urgency = |s: &Status| match s {
        Status::Failed => 4,
        Status::Running => 3,
        Status::Interrupted | Status::Waiting => 2,
        Status::Pending => 1,
        Status::Pruned => 0,
        Status::Done => 0,
    };
    let status = members.iter().map(|j| j.row.status).max_by_key(urgency).unwrap_or(Status::Pending);
    let seconds = members.iter().map(|j| j.row.seconds).sum();
    FoldGroup { members, accuracies, mean, std, status, seconds }
}
