//! `sweep submit` and `sweep worker`: a sweep registered in the store without
//! being run, and processes that claim its work from the store, on any
//! machine that reaches the database, the data and the feature cache.
//!
//! A worker is the run loop of `sweep resume` pointed at whichever sweep has
//! claimable jobs: the same checks (the data it sees must be the data the
//! sweep is bound to), the same feature cache, the same leases and epoch
//! records. Its slots do not wait for jobs other runners hold; the worker
//! looks for other work instead, and exits when none is left (after
//! `idle_exit` without any).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sweep_store::Store;
use tokio_util::sync::CancellationToken;

use crate::run::{free_dead_leases, lease_owner, needs_work, Error, Observer, RunOptions};
use crate::spec::SweepSpec;

/// Registers a sweep file's sweep and jobs, after every check `sweep run`
/// makes before registering, and computes and trains nothing. Returns the
/// sweep's id.
pub async fn submit(
    spec: SweepSpec,
    source: (String, std::path::PathBuf),
    mut opts: RunOptions,
    observer: Arc<dyn Observer>,
) -> Result<String, Error> {
    opts.register_only = true;
    let summary = crate::run::run(spec, Some(source), opts, observer, CancellationToken::new()).await?;
    Ok(summary.sweep_id)
}

/// How a worker picks and ends its work.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Only this sweep (a name, an id or a unique prefix); `None`: any sweep
    /// of the database, the oldest first.
    pub sweep: Option<String>,
    /// Claim at most this many jobs, then exit.
    pub max_jobs: Option<usize>,
    /// Exit after this long with nothing to claim. With `sweep`, a worker
    /// also exits as soon as that sweep has no unfinished job.
    pub idle_exit: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkSummary {
    /// The sweeps it worked on, in order (a sweep may appear more than once).
    pub sweeps: Vec<String>,
    /// Jobs it finished.
    pub done: usize,
    /// Jobs it failed.
    pub failed: usize,
    /// Jobs it interrupted.
    pub interrupted: usize,
    /// Jobs its pruner stopped.
    pub pruned: usize,
    /// Whether it was stopped (a signal).
    pub cancelled: bool,
}

/// One poll's wait with nothing to claim; `false` once idle for
/// `idle_exit` (the worker exits).
async fn idle(worker: &WorkerOptions, idle_since: Instant, cancel: &CancellationToken) -> bool {
    if idle_since.elapsed() >= worker.idle_exit {
        tracing::info!(idle = ?worker.idle_exit, "nothing to claim: exiting");
        return false;
    }
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(worker.poll) => {}
    }
    true
}

/// Claims and trains work from the store until none is left: see the module.
pub async fn work(
    mut opts: RunOptions,
    worker: WorkerOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<WorkSummary, Error> {
    opts.wait_for_others = false;
    opts.register_only = false;
    opts.claims_left = worker.max_jobs.map(|n| Arc::new(AtomicUsize::new(n)));
    let me = lease_owner();
    // One connection for looking, kept while idle: opening checks the whole
    // database (SQLite's quick_check), too much to repeat at every poll.
    let store = Store::open(&opts.db)?;
    let mut summary = WorkSummary::default();
    let mut idle_since = Instant::now();
    loop {
        if cancel.is_cancelled() {
            summary.cancelled = true;
            break;
        }
        if opts.claims_left.as_ref().is_some_and(|left| left.load(Ordering::SeqCst) == 0) {
            tracing::info!("claimed the jobs --max-jobs allows: exiting");
            break;
        }
        match next_sweep(&store, worker.sweep.as_deref(), &me)? {
            Next::Work(id) => {
                tracing::info!(sweep = %id, "working on a sweep");
                let ran = crate::run::resume(Some(&id), opts.clone(), observer.clone(), cancel.clone()).await?;
                summary.sweeps.push(ran.sweep_id);
                summary.done += ran.done;
                summary.failed += ran.failed;
                summary.interrupted += ran.interrupted;
                summary.pruned += ran.pruned;
                if ran.cancelled {
                    summary.cancelled = true;
                    break;
                }
                if ran.done + ran.failed + ran.interrupted + ran.pruned > 0 {
                    idle_since = Instant::now();
                    continue;
                }
                // Runnable jobs, but none it could claim: each waits for
                // jobs another runner holds (a longer job for its shorter
                // one, a job for the one trained for it). Idle, as below.
                if !idle(&worker, idle_since, &cancel).await {
                    break;
                }
            }
            Next::Finished(id) => {
                tracing::info!(sweep = %id, "the sweep has no unfinished job: exiting");
                break;
            }
            Next::Idle => {
                if !idle(&worker, idle_since, &cancel).await {
                    break;
                }
            }
        }
    }
    Ok(summary)
}

/// What a worker finds in the store.
enum Next {
    /// This sweep has a job to claim.
    Work(String),
    /// The sweep the worker is bound to has no unfinished job.
    Finished(String),
    /// Nothing to claim now.
    Idle,
}

/// The first sweep (or the given one) with a claimable job, after freeing
/// the jobs of dead runners of this host.
fn next_sweep(store: &Store, given: Option<&str>, me: &str) -> Result<Next, Error> {
    let sweeps = match given {
        Some(which) => vec![store.find_sweep(Some(which))?],
        None => store.sweeps()?,
    };
    for sweep in &sweeps {
        free_dead_leases(store, &sweep.id, me)?;
        if store.claimable(&sweep.id)? > 0 {
            return Ok(Next::Work(sweep.id.clone()));
        }
    }
    if let [sweep] = sweeps.as_slice() {
        if given.is_some() && !store.jobs(&sweep.id)?.iter().any(needs_work) {
            return Ok(Next::Finished(sweep.id.clone()));
        }
    }
    Ok(Next::Idle)
}
