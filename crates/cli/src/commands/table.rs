//! `sweep table`, `sweep show` and `sweep status`: reading the store.

use std::io::Write;

use anyhow::bail;
use sweep_store::{JobRow, Status, Store, SweepRow};

use crate::args::{Format, GlobalArgs, ShowArgs, StatusArgs, TableArgs};
use crate::output::{Cell, Column, Table};
use crate::Outcome;

const fn col(key: &'static str, heading: &'static str, numeric: bool) -> Column {
    Column { key, heading, numeric }
}

/// The paper's table (Batch Size, Workers, LR, Momentum, Num Epoch, Best Acc), and more.
/// `same_as` names the first job whose results-affecting settings are the same
/// (they differ only in `workers`, which changes speed, never results).
const JOB_COLUMNS: [Column; 12] = [
    col("job_id", "Job", false),
    col("batch_size", "Batch Size", true),
    col("workers", "Workers", true),
    col("lr", "LR", true),
    col("momentum", "Momentum", true),
    col("epochs", "Num Epoch", true),
    col("best_valid_acc", "Best Acc", true),
    col("best_epoch", "Best Epoch", true),
    col("final_train_acc", "Train Acc", true),
    col("status", "Status", false),
    col("seconds", "Seconds", true),
    col("same_as", "Same As", false),
];

fn acc(x: f64) -> String {
    format!("{x:.6}")
}

fn job_row(job: &JobRow) -> Vec<Cell> {
    let status = match (&job.status, &job.error) {
        (Status::Failed, Some(_)) => "failed".to_owned(),
        (Status::Running | Status::Interrupted, _) => {
            format!("{} ({}/{})", job.status.as_str(), job.epochs_done, job.epochs)
        }
        (s, _) => s.as_str().to_owned(),
    };
    vec![
        Cell::text(&job.id),
        Cell::int(job.batch_size),
        Cell::int(job.workers),
        Cell::float(job.lr, job.lr.to_string()),
        Cell::float(job.momentum, job.momentum.to_string()),
        Cell::int(job.epochs),
        Cell::opt_float(job.best_valid_acc, acc),
        Cell::opt_int(job.best_epoch),
        Cell::opt_float(job.final_train_acc, acc),
        Cell { text: status, json: job.status.as_str().into() },
        Cell::float(job.seconds, format!("{:.2}", job.seconds)),
    ]
}

/// The job's settings without those that change only speed.
fn results_key(job: &JobRow) -> String {
    match serde_json::from_str::<serde_json::Value>(&job.config_json) {
        Ok(serde_json::Value::Object(mut map)) => {
            for key in sweep_scheduler::TrainKey::ALL.iter().filter(|k| k.speed_only()) {
                map.remove(key.name());
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => job.id.clone(),
    }
}

/// A sweep's jobs as a table, sorted by `sort` (accuracies best first).
pub fn jobs_table(store: &Store, sweep: &SweepRow, sort: Option<&str>) -> anyhow::Result<Table> {
    let jobs = store.jobs(&sweep.id)?;
    let mut first_of: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut rows: Vec<Vec<Cell>> = jobs
        .iter()
        .map(|job| {
            let mut row = job_row(job);
            let first = *first_of.entry(results_key(job)).or_insert(&job.id);
            row.push(if first == job.id { Cell::none() } else { Cell::text(first) });
            row
        })
        .collect();
    if let Some(key) = sort {
        let Some(i) = JOB_COLUMNS.iter().position(|c| c.key == key) else {
            let keys: Vec<&str> = JOB_COLUMNS.iter().map(|c| c.key).collect();
            bail!("--sort {key}: no such column (one of {})", keys.join(", "));
        };
        let descending = matches!(key, "best_valid_acc" | "final_train_acc");
        rows.sort_by(|a, b| {
            let ord = compare(&a[i].json, &b[i].json);
            if descending {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    Ok(Table { columns: JOB_COLUMNS.to_vec(), rows })
}

/// The fold of a k-fold job.
fn fold_of(job: &JobRow) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(&job.config_json).ok()?.get("fold")?.as_i64()
}

/// A k-fold sweep's table: one row per configuration, with the mean and the
/// sample standard deviation of the best valid accuracy over its folds.
fn folds_table(jobs: &[JobRow]) -> Table {
    let mut groups: Vec<(String, Vec<&JobRow>)> = Vec::new();
    for job in jobs {
        let key = match serde_json::from_str::<serde_json::Value>(&job.config_json) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("fold");
                serde_json::Value::Object(map).to_string()
            }
            _ => job.id.clone(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    let columns = vec![
        col("job_id", "Job (fold 0)", false),
        col("batch_size", "Batch Size", true),
        col("workers", "Workers", true),
        col("lr", "LR", true),
        col("momentum", "Momentum", true),
        col("epochs", "Num Epoch", true),
        col("folds", "Folds Done", true),
        col("best_valid_acc", "Best Acc (mean)", true),
        col("best_valid_acc_std", "Std", true),
        col("status", "Status", false),
        col("seconds", "Seconds", true),
    ];
    let rows = groups
        .iter()
        .map(|(_, members)| {
            let first = members[0];
            let accs: Vec<f64> =
                members.iter().filter(|j| j.status == Status::Done).filter_map(|j| j.best_valid_acc).collect();
            let n = accs.len() as f64;
            let mean = (n > 0.0).then(|| accs.iter().sum::<f64>() / n);
            let std = mean
                .filter(|_| n > 1.0)
                .map(|m| (accs.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
            let status = members.iter().map(|j| j.status).max_by_key(|s| match s {
                Status::Failed => 4,
                Status::Running => 3,
                Status::Interrupted => 2,
                Status::Pending => 1,
                Status::Done => 0,
            });
            vec![
                Cell::text(&first.id),
                Cell::int(first.batch_size),
                Cell::int(first.workers),
                Cell::float(first.lr, first.lr.to_string()),
                Cell::float(first.momentum, first.momentum.to_string()),
                Cell::int(first.epochs),
                Cell { text: format!("{}/{}", accs.len(), members.len()), json: accs.len().into() },
                Cell::opt_float(mean, acc),
                Cell::opt_float(std, acc),
                Cell::text(status.map_or("pending", Status::as_str)),
                Cell::float(
                    members.iter().map(|j| j.seconds).sum(),
                    format!("{:.1}", members.iter().map(|j| j.seconds).sum::<f64>()),
                ),
            ]
        })
        .collect();
    Table { columns, rows }
}

/// Prints a sweep's jobs, sorted by `sort` (accuracies best first); a k-fold
/// sweep prints one row per configuration over its folds.
pub fn print_jobs(store: &Store, sweep: &SweepRow, format: Format, sort: Option<&str>) -> anyhow::Result<()> {
    let jobs = store.jobs(&sweep.id)?;
    if jobs.iter().any(|j| fold_of(j).is_some()) {
        let table = folds_table(&jobs);
        let mut out = std::io::stdout().lock();
        if format == Format::Table {
            writeln!(out, "sweep {} ({}), k-fold: mean and standard deviation over the folds", sweep.name, sweep.id)?;
        }
        write!(out, "{}", table.render(format))?;
        return Ok(());
    }
    let table = jobs_table(store, sweep, sort)?;
    let same = table.rows.iter().filter(|r| !r[11].json.is_null()).count();
    let mut out = std::io::stdout().lock();
    if format == Format::Table {
        writeln!(out, "sweep {} ({})", sweep.name, sweep.id)?;
    }
    write!(out, "{}", table.render(format))?;
    if format == Format::Table && same > 0 {
        writeln!(
            out,
            "{same} job(s) differ from the job in `Same As` only in workers, which sets the decode threads of the \
             one backbone pass: same accuracy, their times side by side"
        )?;
    }
    Ok(())
}

/// Orders JSON values: numbers numerically, missing values last.
fn compare(a: &serde_json::Value, b: &serde_json::Value) -> std::cmp::Ordering {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(f64::NAN).total_cmp(&y.as_f64().unwrap_or(f64::NAN))
        }
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

pub fn table(global: &GlobalArgs, args: &TableArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    print_jobs(&store, &sweep, args.format, args.sort.as_deref())?;
    Ok(Outcome::Success)
}

pub fn show(global: &GlobalArgs, args: &ShowArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&global.db)?;
    let id = store.resolve_job(&args.job)?;
    let columns = vec![
        col("epoch", "Epoch", true),
        col("train_loss", "Train Loss", true),
        col("train_acc", "Train Acc", true),
        col("valid_loss", "Valid Loss", true),
        col("valid_acc", "Valid Acc", true),
        col("lr", "LR", true),
        col("seconds", "Seconds", true),
    ];
    let rows = store
        .epochs(&id)?
        .iter()
        .map(|e| {
            vec![
                Cell::int(e.epoch),
                Cell::float(e.train_loss, format!("{:.4}", e.train_loss)),
                Cell::float(e.train_acc, acc(e.train_acc)),
                Cell::float(e.valid_loss, format!("{:.4}", e.valid_loss)),
                Cell::float(e.valid_acc, acc(e.valid_acc)),
                Cell::float(e.lr, e.lr.to_string()),
                Cell::float(e.seconds, format!("{:.2}", e.seconds)),
            ]
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.format == Format::Table {
        writeln!(out, "job {id}")?;
    }
    write!(out, "{}", Table { columns, rows }.render(args.format))?;
    Ok(Outcome::Success)
}

pub fn status(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&global.db)?;
    let mut columns =
        vec![col("sweep_id", "Sweep", false), col("name", "Name", false), col("created_at", "Created", false)];
    columns.extend(Status::ALL.iter().map(|s| col(s.as_str(), s.as_str(), true)));
    columns.push(col("features", "Features", false));
    let rows = store
        .sweeps()?
        .iter()
        .map(|s| {
            let mut row = vec![Cell::text(&s.id), Cell::text(&s.name), Cell::text(&s.created_at)];
            row.extend(
                Status::ALL.iter().map(|st| Cell::int(s.counts.iter().find(|c| c.0 == *st).map_or(0, |c| c.1) as i64)),
            );
            row.push(match s.features_reused {
                Some(true) => Cell::text("cached"),
                Some(false) => Cell::text("computed"),
                None => Cell::none(),
            });
            row
        })
        .collect();
    write!(std::io::stdout().lock(), "{}", Table { columns, rows }.render(args.format))?;
    Ok(Outcome::Success)
}
