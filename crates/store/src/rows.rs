//! The values that go into and come out of the tables: job statuses, sweeps
//! and jobs to register, and the rows the read methods return.

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Not started.
    Pending,
    /// Claimed by a runner holding its lease.
    Running,
    /// Every epoch finished.
    Done,
    /// Stopped by an error, recorded in `error`.
    Failed,
    /// Stopped by the user; resumable.
    Interrupted,
    /// Stopped early by the sweep's pruner, its epochs kept; never resumed
    /// (where and why: [`PruneRow`](crate::PruneRow)).
    Pruned,
    /// Stopped by ASHA at a rung, its epochs kept: promoted (running again
    /// from its last epoch) when later trials put it in the rung's top
    /// 1/eta; pruned when the sweep has nothing left to run (schema 6).
    Waiting,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Running,
        Status::Done,
        Status::Failed,
        Status::Interrupted,
        Status::Waiting,
        Status::Pruned,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Pruned => "pruned",
            Status::Waiting => "waiting",
        }
    }

    /// Stopped by the pruner: for good (`pruned`) or, at an ASHA rung, until
    /// promoted (`waiting`). Its scores are of fewer epochs than it has.
    pub fn stopped_early(self) -> bool {
        matches!(self, Status::Pruned | Status::Waiting)
    }

    pub(crate) fn parse(s: &str) -> Status {
        Status::ALL.into_iter().find(|st| st.as_str() == s).unwrap_or(Status::Failed)
    }
}

/// A sweep to register.
#[derive(Debug, Clone)]
pub struct NewSweep<'a> {
    /// The sweep's id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its canonical JSON.
    pub spec_json: &'a str,
    /// The file as submitted.
    pub source: Option<&'a str>,
    /// Where it was submitted from.
    pub source_path: Option<&'a str>,
}

/// A job to register.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The job's id.
    pub id: &'a str,
    /// Resolved train settings as JSON.
    pub config_json: &'a str,
    /// Batch size.
    pub batch_size: i64,
    /// Decode threads.
    pub workers: i64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Epochs.
    pub epochs: i64,
}

/// What registering a sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Whether the sweep itself was new.
    pub new_sweep: bool,
    /// Jobs added to the database.
    pub new_jobs: usize,
    /// Jobs the database already had (from this or another sweep).
    pub known_jobs: usize,
}

/// A sweep as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Canonical JSON.
    pub spec_json: String,
    /// The file as submitted.
    pub source: Option<String>,
    /// Where it was submitted from.
    pub source_path: Option<String>,
    /// When it was first submitted (UTC).
    pub created_at: String,
    /// Whether its last run found the features cached.
    pub features_reused: Option<bool>,
    /// The feature-cache key of its last run.
    pub features_key: Option<String>,
    /// The split of its last run (JSON: seed, folds, sizes, a hash of the
    /// valid sets, and the images `skip_bad_images` left out as `skipped`).
    pub split_json: Option<String>,
    /// Job counts by status.
    pub counts: Vec<(Status, usize)>,
}

/// A job as stored, with its place in a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// Resolved train settings as JSON.
    pub config_json: String,
    /// Batch size.
    pub batch_size: i64,
    /// Decode threads.
    pub workers: i64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Epochs.
    pub epochs: i64,
    /// Status.
    pub status: Status,
    /// Times claimed.
    pub attempts: i64,
    /// The error of a failed job.
    pub error: Option<String>,
    /// Best validation accuracy so far.
    pub best_valid_acc: Option<f64>,
    /// Its 1-based epoch.
    pub best_epoch: Option<i64>,
    /// Training accuracy of the last recorded epoch.
    pub final_train_acc: Option<f64>,
    /// The lowest validation loss of its recorded epochs.
    pub best_valid_loss: Option<f64>,
    /// The lowest training loss of its recorded epochs.
    pub best_train_loss: Option<f64>,
    /// Epochs recorded.
    pub epochs_done: i64,
    /// Training seconds, summed over epochs.
    pub seconds: f64,
}

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: i64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_acc: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub valid_acc: f64,
    /// Learning rate.
    pub lr: f64,
    /// Seconds.
    pub seconds: f64,
}

/// A job handed to a runner by [`Store::claim`](crate::Store::claim).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The job's id.
    pub id: String,
    /// Resolved train settings as JSON.
    pub config_json: String,
    /// Times claimed, this one included.
    pub attempts: i64,
}

/// One feature pass of a sweep's run, as recorded by [`Store::record_feature_run`](crate::Store::record_feature_run).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRun {
    /// Row id, increasing in recording order.
    pub id: i64,
    /// The sweep whose run it was.
    pub sweep_id: String,
    /// The feature-cache key.
    pub cache_key: String,
    /// Whether the features came from the cache (no backbone pass).
    pub reused: bool,
    /// Images the features cover.
    pub images: i64,
    /// Seconds the pass (or the cache read) took, when timed.
    pub seconds: Option<f64>,
    /// When it was recorded (UTC).
    pub recorded_at: String,
}

/// How a job ended for its runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish<'a> {
    /// All epochs recorded.
    Done,
    /// Failed with this error.
    Failed(&'a str),
    /// Stopped by the user.
    Interrupted,
}
