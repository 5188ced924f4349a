//! `sweep submit FILE` and `sweep worker`: a sweep registered without being
//! run, and the processes that claim its jobs (on any machine that reaches
//! the database, the data and the feature cache).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use sweep_scheduler::{RunOptions, SweepSpec, WorkerOptions};

use crate::args::{GlobalArgs, SubmitArgs, WorkerArgs};
use crate::output::printable;
use crate::Outcome;

pub fn submit(global: &GlobalArgs, args: &SubmitArgs) -> anyhow::Result<Outcome> {
    let (id, _) = register(global, &args.file, args.max_jobs, None, !args.no_sanity_check)?;
    writeln!(std::io::stdout().lock(), "{id}")?;
    if !global.quiet {
        eprintln!("submitted: start workers with `sweep worker --sweep {id}` (with the same --db)");
    }
    Ok(Outcome::Success)
}

/// Registers `file`'s sweep (the checks of `sweep run` first) and returns
/// its id and name.
pub(crate) fn register(
    global: &GlobalArgs,
    file: &std::path::Path,
    max_jobs: u64,
    cache_dir: Option<&std::path::Path>,
    sanity_check: bool,
) -> anyhow::Result<(String, String)> {
    let spec = SweepSpec::load(file)?;
    let name = spec.name.clone();
    let source = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let path = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let mut opts = RunOptions::new(global.db.clone());
    opts.max_jobs = max_jobs;
    opts.sanity_check = sanity_check;
    if let Some(dir) = cache_dir {
        opts.cache_dir = dir.to_owned();
    }
    let (id, _) = super::run::supervise(global, move |progress, _cancel| {
        sweep_scheduler::submit(spec, (source, path), opts, progress)
    })?;
    Ok((id?, name))
}

pub fn worker(global: &GlobalArgs, args: &WorkerArgs) -> anyhow::Result<Outcome> {
    let mut opts = RunOptions::new(global.db.clone());
    if let Some(dir) = &args.cache_dir {
        opts.cache_dir = dir.clone();
    }
    opts.parallel = args.parallel.map(usize::from);
    opts.devices = args.device.clone();
    opts.shard_images = args.shard_images as usize;
    opts.sanity_check = !args.no_sanity_check;
    opts.fuse = (args.fuse || args.no_fuse).then_some(args.fuse);
    let worker = WorkerOptions {
        sweep: args.sweep.clone(),
        max_jobs: args.max_jobs.map(|n| n as usize),
        idle_exit: Duration::from_secs(args.idle_exit),
        poll: Duration::from_secs(1),
    };
    let (summary, stopped_by) =
        super::run::supervise(global, move |progress, cancel| sweep_scheduler::work(opts, worker, progress, cancel))?;
    let summary = summary?;
    let sweeps = {
        let mut ids = summary.sweeps.clone();
        ids.dedup();
        ids.iter().map(|id| printable(id).into_owned()).collect::<Vec<_>>().join(", ")
    };
    if !global.quiet {
        eprintln!(
            "worker: {} done, {} failed, {} interrupted{}{}",
            summary.done,
            summary.failed,
            summary.interrupted,
            if summary.pruned > 0 { format!(", {} pruned", summary.pruned) } else { String::new() },
            if sweeps.is_empty() { String::new() } else { format!(" (sweeps {sweeps})") }
        );
    }
    if summary.cancelled {
        return Ok(Outcome::Interrupted(stopped_by.map_or(130, |s| s.exit_code())));
    }
    Ok(if summary.failed > 0 { Outcome::Failure } else { Outcome::Success })
}
