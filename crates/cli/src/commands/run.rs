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
        let watcher = {
            let (cancel, progress) = (cancel.clone(), progress.clone());
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    progress.message(
                        "stopping: running jobs end at their last recorded epoch (Ctrl-C again quits at once)",
                    );
                    cancel.cancel();
                    if tokio::signal::ctrl_c().await.is_ok() {
                        // Every write is a transaction: quitting here loses nothing recorded.
                        eprintln!("quit");
                        std::process::exit(130);
                    }
                }
            })
        };
        let result = start(progress.clone(), cancel.clone()).await;
        watcher.abort();
        result
    });
    progress.finish();
    let summary = summary?;
    let store = sweep_store::Store::open(&global.db)?;
    let sweep = store.find_sweep(Some(&summary.sweep_id))?;
    super::table::print_jobs(&store, &sweep, format, None)?;
    if summary.cancelled {
        eprintln!(
            "interrupted: {} job(s) stopped at their last recorded epoch; continue with `sweep resume {}`",
            summary.interrupted, summary.sweep_id
        );
        return Ok(Outcome::Interrupted);
    }
    let failed = sweep.counts.iter().find(|(s, _)| *s == sweep_store::Status::Failed).map_or(0, |c| c.1);
    if failed > 0 {
        eprintln!("{failed} job(s) failed: their errors are in `sweep table --format json`; retry with `sweep resume --retry-failed`");
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}
