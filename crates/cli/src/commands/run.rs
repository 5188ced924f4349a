//! `sweep run FILE` and `sweep resume [SWEEP]`.

use std::sync::Arc;

use anyhow::Context;
use sweep_scheduler::{RunOptions, RunSummary, SweepSpec};
use tokio_util::sync::CancellationToken;

use crate::args::{ExecArgs, Format, GlobalArgs, ResumeArgs, RunArgs};
use crate::output::{printable, printable_lines};
use crate::progress::Progress;
use crate::Outcome;

fn options(global: &GlobalArgs, exec: &ExecArgs) -> RunOptions {
    let mut opts = RunOptions::new(global.db.clone());
    if let Some(dir) = &exec.cache_dir {
        opts.cache_dir = dir.clone();
    }
    opts.parallel = exec.parallel.map(usize::from);
    opts.devices = exec.device.clone();
    opts.max_jobs = exec.max_jobs;
    opts.retry_failed = exec.retry_failed;
    opts.shard_images = exec.shard_images as usize;
    opts.sanity_check = !exec.no_sanity_check;
    opts.fuse = (exec.fuse || exec.no_fuse).then_some(exec.fuse);
    opts
}

pub fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<Outcome> {
    let spec = SweepSpec::load(&args.file)?;
    let source =
        std::fs::read_to_string(&args.file).with_context(|| format!("{}: cannot read", args.file.display()))?;
    let path = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let opts = options(global, &args.exec);
    execute(global, args.format, move |progress, cancel| {
        sweep_scheduler::run(spec, Some((source, path)), opts, progress, cancel)
    })
}

pub fn resume(global: &GlobalArgs, args: &ResumeArgs) -> anyhow::Result<Outcome> {
    let mut opts = options(global, &args.exec);
    opts.restart = args.restart.clone();
    let which = args.sweep.clone();
    execute(global, args.format, move |progress, cancel| async move {
        sweep_scheduler::resume(which.as_deref(), opts, progress, cancel).await
    })
}

fn execute<F, Fut>(global: &GlobalArgs, format: Format, start: F) -> anyhow::Result<Outcome>
where
    F: FnOnce(Arc<dyn sweep_scheduler::Observer>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<RunSummary, sweep_scheduler::Error>>,
{
    let (summary, stopped_by) = supervise(global, start)?;
    let summary = summary?;
    let store = sweep_store::Store::open(&global.db)?;
    let sweep = store.find_sweep(Some(&summary.sweep_id))?;
    super::table::print_jobs(&store, sweep.clone(), format, None, false)?;
    if summary.cancelled {
        eprintln!(
            "interrupted: {} job(s) stopped at their last recorded epoch; continue with `sweep resume {}`",
            summary.interrupted, summary.sweep_id
        );
        return Ok(Outcome::Interrupted(stopped_by.map_or(130, |s| s.exit_code())));
    }
    let failed: Vec<_> =
        store.jobs(&sweep.id)?.into_iter().filter(|j| j.status == sweep_store::Status::Failed).collect();
    if !failed.is_empty() {
        for job in &failed {
            let error = job.error.as_deref().unwrap_or("no error recorded");
            eprintln!("job {} failed: {}", printable(&job.id), printable_lines(error));
        }
        eprintln!("{} job(s) failed; retry them with `sweep resume {} --retry-failed`", failed.len(), summary.sweep_id);
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}

/// Runs `start` on a tokio runtime with progress on stderr, stopping it
/// cleanly at the first SIGINT, SIGTERM or SIGHUP (its cancellation token)
/// and quitting at the second. Returns its result, the signal that stopped
/// it, if any.
pub(crate) fn supervise<F, Fut, T>(
    global: &GlobalArgs,
    start: F,
) -> anyhow::Result<(Result<T, sweep_scheduler::Error>, Option<Stop>)>
where
    F: FnOnce(Arc<dyn sweep_scheduler::Observer>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, sweep_scheduler::Error>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::new(global.quiet));
    let stopped_by: Arc<std::sync::OnceLock<Stop>> = Arc::default();
    let result = runtime.block_on(async {
        // Listening starts before any work, so no signal is missed.
        let mut stops = Stops::new()?;
        let watcher = {
            let (cancel, progress, stopped_by) = (cancel.clone(), progress.clone(), stopped_by.clone());
            tokio::spawn(async move {
                let first = stops.next().await;
                let _ = stopped_by.set(first);
                progress.message(&format!(
                    "stopping ({}): running jobs end at their last recorded epoch (a second signal quits at once)",
                    first.name()
                ));
                cancel.cancel();
                let second = stops.next().await;
                // Every write is a transaction: quitting here loses nothing recorded.
                progress.finish();
                eprintln!(
                    "quit ({}): every recorded epoch is kept; continue with `{}`",
                    second.name(),
                    resume_command(&progress)
                );
                std::process::exit(first.exit_code().into());
            })
        };
        let result = start(progress.clone(), cancel.clone()).await;
        watcher.abort();
        anyhow::Ok(result)
    })?;
    // A backbone pass abandoned at Ctrl-C may still be running: do not wait for it.
    runtime.shutdown_background();
    progress.finish();
    let stopped_by = stopped_by.get().copied();
    Ok((result, stopped_by))
}

/// `sweep resume ID` for the sweep being run, once it is known.
fn resume_command(progress: &Progress) -> String {
    match progress.sweep_id() {
        Some(id) => format!("sweep resume {id}"),
        None => "sweep resume".to_owned(),
    }
}

/// A signal that stops a run cleanly: Ctrl-C, and what Slurm (at a time
/// limit or on preemption), Kubernetes (on eviction), systemd (on stop) and
/// a closed terminal send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Interrupt,
    Terminate,
    Hangup,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
            Stop::Hangup => "SIGHUP",
        }
    }

    /// 128 + the signal's number, as a shell reports a process it ended.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
            Stop::Hangup => 129,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP as one stream, so that a second signal is seen
/// even when it comes while the first is being handled.
struct Stops {
    #[cfg(unix)]
    signals: [(Stop, tokio::signal::unix::Signal); 3],
}

impl Stops {
    fn new() -> anyhow::Result<Stops> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |stop: Stop, kind: SignalKind| {
                signal(kind).map(|s| (stop, s)).with_context(|| format!("cannot listen for {}", stop.name()))
            };
            Ok(Stops {
                signals: [
                    listen(Stop::Interrupt, SignalKind::interrupt())?,
                    listen(Stop::Terminate, SignalKind::terminate())?,
                    listen(Stop::Hangup, SignalKind::hangup())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Stops {})
    }

    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            let [(a, sa), (b, sb), (c, sc)] = &mut self.signals;
            tokio::select! {
                _ = sa.recv() => *a,
                _ = sb.recv() => *b,
                _ = sc.recv() => *c,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}
