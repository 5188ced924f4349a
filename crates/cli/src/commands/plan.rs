//! `sweep plan FILE`: the jobs a sweep file expands to; `sweep schema`: the
//! format of sweep files.

use std::io::Write;

use sweep_scheduler::{Method, SweepSpec, TrainKey};

use crate::args::{GlobalArgs, PlanArgs};
use crate::output::{printable, Cell, Column, Table};
use crate::Outcome;

pub fn plan(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<Outcome> {
    let spec = SweepSpec::load(&args.file)?;
    let jobs = spec.jobs(args.max_jobs)?;
    let mut columns = vec![Column { key: "job_id", heading: "Job", numeric: false }];
    // A search's trial numbers (0-based; the configs have none).
    let sampled = spec.method() != Method::Grid;
    if sampled {
        columns.push(Column { key: "trial", heading: "Trial", numeric: true });
    }
    columns.extend(TrainKey::ALL.iter().map(|k| Column { key: k.name(), heading: k.name(), numeric: true }));
    let rows = jobs
        .iter()
        .map(|job| {
            let mut row = vec![Cell::text(&job.id)];
            if sampled {
                row.push(Cell::opt_int(job.trial.map(|t| t as i64)));
            }
            row.extend(TrainKey::ALL.iter().map(|k| match job.params.get(*k) {
                sweep_scheduler::Param::Int(i) => Cell::int(i as i64),
                sweep_scheduler::Param::Float(x) => Cell::float(x, x.to_string()),
                sweep_scheduler::Param::Choice(s) => Cell::text(s),
            }));
            row
        })
        .collect();
    let table = Table { columns, rows };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", table.render(args.format))?;
    if args.format == crate::args::Format::Table {
        let (file, name) = (args.file.display().to_string(), printable(&spec.name));
        let search = match spec.method() {
            Method::Grid => String::new(),
            method => format!(", {} search", method.name()),
        };
        eprintln!("{}: {} jobs in sweep `{name}` ({}){search}", printable(&file), jobs.len(), spec.id());
    }
    if !args.no_check {
        check(global, args, &spec)?;
    }
    Ok(Outcome::Success)
}

/// What can be checked without computing, as `sweep run` checks it before
/// it registers anything: the data set and its labels, the weights file
/// (and what its metadata declares), the split, the cache folder. One line
/// each on stderr; the first problem ends the command.
fn check(global: &GlobalArgs, args: &PlanArgs, spec: &SweepSpec) -> anyhow::Result<()> {
    let checked = sweep_scheduler::preflight::check(spec)?;
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => sweep_scheduler::RunOptions::new(global.db.clone()).cache_dir,
    };
    let (images, dim) = (checked.dataset.items.len(), checked.model.model.arch.feature_dim());
    sweep_scheduler::preflight::check_cache_dir(&cache_dir, images, dim)?;
    if !global.quiet {
        let classes = checked.dataset.classes.len();
        eprintln!("data: {images} images in {classes} classes ({})", spec.data.layout.name());
        eprintln!("{}", printable(&checked.model.describe()));
        eprintln!("{}", printable(&checked.split_line(spec)));
        eprintln!(
            "features: {images} x {dim} values, cached in {} (writable)",
            printable(&cache_dir.display().to_string())
        );
    }
    Ok(())
}

/// `sweep schema`: the JSON Schema of sweep files, made from the same types
/// the checker reads its keys from.
pub fn schema() -> anyhow::Result<Outcome> {
    std::io::stdout().lock().write_all(sweep_scheduler::json_schema().as_bytes())?;
    Ok(Outcome::Success)
}
