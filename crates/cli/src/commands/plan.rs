//! `sweep plan FILE`: the jobs a sweep file expands to; `sweep schema`: the
//! format of sweep files.

use std::io::Write;

use sweep_scheduler::{Method, SweepSpec, TrainKey};

use crate::args::PlanArgs;
use crate::output::{printable, Cell, Column, Table};
use crate::Outcome;

pub fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
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
    Ok(Outcome::Success)
}

/// `sweep schema`: the JSON Schema of sweep files, made from the same types
/// the checker reads its keys from.
pub fn schema() -> anyhow::Result<Outcome> {
    std::io::stdout().lock().write_all(sweep_scheduler::json_schema().as_bytes())?;
    Ok(Outcome::Success)
}
