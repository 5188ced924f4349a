//! `sweep run FILE` and `sweep resume [SWEEP]`.

use std::sync::Arc;

use anyhow::Context;
use sweep_scheduler::{RunOptions, RunSummary, SweepSpec};
use tokio_util::sync::CancellationToken;

use crate::args::{ExecArgs, Format, GlobalArgs, ResumeArgs, RunArgs};
use crate::progress::Progress;
use crate::Outcome;

fn options(global: &GlobalArgs, exec: &ExecArgs) -> RunOptions {
    let mut opts = RunOptions::new(global.db.clone());
    if let Some(dir) = &exec.cache_dir {
        opts.cache_dir = dir.clone();
    }
    opts.parallel = exec.parallel as usize;
    opts.devices = exec.device.clone();
    opts.max_jobs = exec.max_jobs;
    opts.retry_failed = exec.retry_failed;
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
    let opts = options(global, &args.exec);
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::new(global.quiet));
    let summary = runtime.block_on(async {
        // Listening starts before any work, so no Ctrl-C is missed.
        let mut interrupts = Interrupts::new()?;
        let watcher = {
            let (cancel, progress) = (cancel.clone(), progress.clone());
            tokio::spawn(async move {
                interrupts.next().await;
                progress
                    .message("stopping: running jobs end at their last recorded epoch (Ctrl-C again quits at once)");
                cancel.cancel();
                interrupts.next().await;
                // Every write is a transaction: quitting here loses nothing recorded.
                progress.finish();
                eprintln!("quit: every recorded epoch is kept; continue with `{}`", resume_command(&progress));
                std::process::exit(130);
            })
        };
        let result = start(progress.clone(), cancel.clone()).await;
        watcher.abort();
        anyhow::Ok(result)
    })?;
    // A backbone pass abandoned at Ctrl-C may still be running: do not wait for it.
    runtime.shutdown_background();
    progress.finish();
    let summary = summary?;
    let store = sweep_store::Store::open(&global.db)?;
    let sweep = store.find_sweep(Some(&summary.sweep_id))?;
    super::table::print_jobs(&store, sweep.clone(), format, None)?;
    if summary.cancelled {
        eprintln!(
            "interrupted: {} job(s) stopped at their last recorded epoch; continue with `sweep resume {}`",
            summary.interrupted, summary.sweep_id
        );
        return Ok(Outcome::Interrupted);
    }
    let failed: Vec<_> =
        store.jobs(&sweep.id)?.into_iter().filter(|j| j.status == sweep_store::Status::Failed).collect();
    if !failed.is_empty() {
        for job in &failed {
            eprintln!("job {} failed: {}", job.id, job.error.as_deref().unwrap_or("no error recorded"));
        }
        eprintln!("{} job(s) failed; retry them with `sweep resume {} --retry-failed`", failed.len(), summary.sweep_id);
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}

/// `sweep resume ID` for the sweep being run, once it is known.
fn resume_command(progress: &Progress) -> String {
    match progress.sweep_id() {
        Some(id) => format!("sweep resume {id}"),
        None => "sweep resume".to_owned(),
    }
}

/// Ctrl-C (SIGINT) as a stream, so that a second one is seen even when it
/// comes while the first is being handled.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Interrupts { signal: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")? })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
