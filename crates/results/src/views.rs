//! What a dashboard shows beside the table: a sweep's progress, one job in
//! full, the jobs whose curves are worth watching, and the search views
//! (objective against each key, best so far against trial number).

use sweep_store::{EpochRow, Status, Store};

use crate::{Error, Job, SweepResults};

/// A sweep's training time so far and an estimate of what is left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Epochs recorded, over the sweep's jobs.
    pub epochs_done: i64,
    /// Epochs the sweep's jobs will have recorded when done (failed jobs
    /// count what they recorded).
    pub epochs_total: i64,
    /// Training seconds recorded (summed over jobs: with `--parallel` the
    /// wall clock is shorter).
    pub elapsed_seconds: f64,
    /// The epochs left at the mean recorded seconds an epoch; `None` before
    /// the first epoch.
    pub remaining_seconds: Option<f64>,
}

/// A checkpoint's size, read without its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// `last` or `best`.
    pub kind: String,
    /// The epoch it holds.
    pub epoch: i64,
    /// Its size.
    pub bytes: i64,
}

/// One job in full: its row and settings, every epoch, its checkpoints'
/// sizes, and the sweeps it belongs to.
#[derive(Debug, Clone)]
pub struct JobDetail {
    /// The job (`same_as` is not set: it belongs to a sweep's view).
    pub job: Job,
    /// Every recorded epoch (of the job trained for it, when it was not
    /// trained itself: `job.trained_as`).
    pub epochs: Vec<EpochRow>,
    /// Its checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// The ids of the sweeps that hold it, oldest first.
    pub sweeps: Vec<String>,
}

impl JobDetail {
    /// The job of this exact id; `None` when there is none.
    pub fn load(store: &Store, id: &str) -> Result<Option<JobDetail>, Error> {
        let Some(row) = store.job(id)? else { return Ok(None) };
        let checkpoints = store
            .checkpoint_sizes(id)?
            .into_iter()
            .map(|(kind, epoch, bytes)| Checkpoint { kind, epoch, bytes })
            .collect();
        let mut job = Job::new(row);
        job.trained_as = store.trained_as(id)?;
        job.pruned = store.prune_decision(id)?;
        Ok(Some(JobDetail {
            epochs: store.epochs(job.trained_as.as_deref().unwrap_or(id))?,
            job,
            checkpoints,
            sweeps: store.sweeps_of_job(id)?,
        }))
    }
}

/// A key whose positive values span this factor or more is drawn on a log axis.
pub const LOG_SPAN: f64 = 20.0;

/// One trial of the best-so-far curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 1-based, in expansion order among the jobs with an objective.
    pub number: usize,
    /// The job.
    pub job_id: String,
    /// Its best valid accuracy.
    pub objective: f64,
    /// The highest objective up to and including it.
    pub best_so_far: f64,
}

impl SweepResults {
    /// Training time so far and left (see [`Progress`]).
    pub fn progress(&self) -> Progress {
        let epochs_done: i64 = self.jobs.iter().map(|j| j.row.epochs_done).sum();
        let epochs_total: i64 =
            self.jobs
                .iter()
                .map(|j| {
                    if j.row.status == Status::Failed {
                        j.row.epochs_done
                    } else {
                        j.row.epochs.max(j.row.epochs_done)
                    }
                })
                .sum();
        let elapsed_seconds: f64 = self.jobs.iter().map(|j| j.row.seconds).sum();
        let remaining_seconds =
            (epochs_done > 0).then(|| (epochs_total - epochs_done) as f64 * elapsed_seconds / epochs_done as f64);
        Progress { epochs_done, epochs_total, elapsed_seconds, remaining_seconds }
    }

    /// The jobs whose learning curves to draw, at most `limit`: the best job,
    /// the running ones, then the others by best valid accuracy; only jobs
    /// with an epoch.
    pub fn watched(&self, limit: usize) -> Vec<&Job> {
        let mut ranked: Vec<&Job> = self.jobs.iter().filter(|j| j.row.epochs_done > 0).collect();
        let best = self.best().map(|b| b.row.id.clone());
        ranked.sort_by(|a, b| {
            let key = |j: &Job| (best.as_deref() != Some(j.row.id.as_str()), j.row.status != Status::Running);
            key(a).cmp(&key(b)).then_with(|| {
                b.row
                    .best_valid_acc
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&a.row.best_valid_acc.unwrap_or(f64::NEG_INFINITY))
            })
        });
        ranked.truncate(limit);
        ranked
    }

    /// The recorded epochs of `jobs` (as [`SweepResults::watched`] gives).
    pub fn curves_of<'a>(&self, store: &Store, jobs: &[&'a Job]) -> Result<Vec<(&'a Job, Vec<EpochRow>)>, Error> {
        jobs.iter().map(|j| Ok((*j, store.epochs(&j.row.id)?))).collect()
    }

    /// The best-so-far curve: each job with a best valid accuracy, in
    /// expansion order (the order one runner trains them), and the best up
    /// to it.
    pub fn best_so_far(&self) -> Vec<Trial> {
        let mut best = f64::NEG_INFINITY;
        self.jobs
            .iter()
            .filter_map(|j| Some((j, j.row.best_valid_acc.filter(|y| y.is_finite())?)))
            .enumerate()
            .map(|(i, (j, y))| {
                best = best.max(y);
                Trial { number: i + 1, job_id: j.row.id.clone(), objective: y, best_so_far: best }
            })
            .collect()
    }
}
