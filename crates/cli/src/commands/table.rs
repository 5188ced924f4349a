//! `sweep table`, `sweep show` and `sweep status`: reading the store.

use std::io::Write;

use anyhow::Context;
use sweep_results::{Features, Job, Objective, SplitInfo, SweepResults};
use sweep_store::{Status, Store, SweepRow};

use crate::args::{Format, GlobalArgs, ShowArgs, StatusArgs, TableArgs};
use crate::output::{printable, Cell, Column, Table};
use crate::Outcome;

const fn col(key: &'static str, heading: &'static str, numeric: bool) -> Column {
    Column { key, heading, numeric }
}

/// The paper's table (Batch Size, Workers, LR, Momentum, Num Epoch, Best Acc), and more.
/// `same_as` names the first job whose results-affecting settings are the same
/// (they differ only in `workers`, which changes speed, never results).
const JOB_COLUMNS: [Column; 13] = [
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
    col("total_seconds", "Total s", true),
    col("same_as", "Same As", false),
];

fn acc(x: f64) -> String {
    format!("{x:.6}")
}

/// The keys that change only speed, never results (`workers`): the
/// scheduler's knowledge, handed to the results.
pub fn speed_only_keys() -> Vec<&'static str> {
    sweep_scheduler::TrainKey::ALL.iter().filter(|k| k.speed_only()).map(|k| k.name()).collect()
}

/// A sweep's results, read from the store.
pub fn load(store: &Store, sweep: SweepRow) -> anyhow::Result<SweepResults> {
    Ok(SweepResults::load(store, sweep, &speed_only_keys())?)
}

/// Where and why the pruner stopped a job: in CSV and JSON always, after
/// every other column; in text `Pruned At` when a job was pruned.
const PRUNE_COLUMNS: [Column; 4] = [
    col("epochs_done", "Epochs Run", true),
    col("prune_epoch", "Pruned At", true),
    col("prune_rung", "Rung", true),
    col("prune_reason", "Why Pruned", false),
];

/// The columns of the losses, by the objective whose score they hold.
const LOSS_COLUMNS: [(Objective, Column); 2] = [
    (Objective::ValidLoss, col("best_valid_loss", "Best Valid Loss", true)),
    (Objective::TrainLoss, col("best_train_loss", "Best Train Loss", true)),
];

/// One cell of a job's row, by column key: a result, or any setting.
/// `share` is the job's part of the sweep's backbone pass (seconds), added to
/// its head's seconds in `Total s`.
fn job_cell(job: &Job, key: &str, share: Option<f64>) -> Cell {
    let row = &job.row;
    match key {
        "job_id" => Cell::text(&row.id),
        "batch_size" => Cell::int(row.batch_size),
        "workers" => Cell::int(row.workers),
        "lr" => Cell::float(row.lr, row.lr.to_string()),
        "momentum" => Cell::float(row.momentum, row.momentum.to_string()),
        "epochs" => Cell::int(row.epochs),
        "best_valid_acc" => Cell::opt_float(row.best_valid_acc, acc),
        "best_epoch" => Cell::opt_int(row.best_epoch),
        "final_train_acc" => Cell::opt_float(row.final_train_acc, acc),
        "best_valid_loss" => Cell::opt_float(row.best_valid_loss, |x| format!("{x:.4}")),
        "best_train_loss" => Cell::opt_float(row.best_train_loss, |x| format!("{x:.4}")),
        "status" => Cell { text: job.status_text(), json: row.status.as_str().into() },
        "seconds" => Cell::float(row.seconds, format!("{:.2}", row.seconds)),
        "total_seconds" => Cell::opt_float(share.map(|s| s + row.seconds), |x| format!("{x:.2}")),
        "same_as" => job.same_as.as_deref().map_or_else(Cell::none, Cell::text),
        "epochs_done" => Cell::int(row.epochs_done),
        "prune_epoch" => Cell::opt_int(job.pruned.as_ref().map(|p| p.epoch)),
        "prune_rung" => Cell::opt_int(job.pruned.as_ref().and_then(|p| p.rung)),
        "prune_reason" => job.pruned.as_ref().map_or_else(Cell::none, |p| Cell::text(&p.reason)),
        setting => match (job.config.get(setting), job.param(setting)) {
            (Some(json), Some(value)) => Cell { text: value.to_string(), json: json.clone() },
            _ => Cell::none(),
        },
    }
}

/// The train keys past the paper's five, with the static names columns take.
fn other_keys() -> impl Iterator<Item = &'static str> {
    sweep_scheduler::TrainKey::ALL.into_iter().map(|k| k.name()).filter(|k| !sweep_results::PAPER_KEYS.contains(k))
}

/// A sweep's jobs as a table, in the results' order. For people (text,
/// Markdown): the paper's columns, every other setting that varies in the
/// sweep, the objective's loss when it ranks the jobs, then the results. In
/// CSV and JSON every setting, always, and both losses, after the columns
/// they always had (so scripts reading them by position keep working).
pub fn jobs_table(results: &SweepResults, format: Format) -> Table {
    let every = matches!(format, Format::Csv | Format::Json);
    let mut columns: Vec<Column> = JOB_COLUMNS[..6].to_vec();
    let varying = results.varying_keys();
    let setting = |key: &'static str| col(key, key, true);
    if every {
        columns.extend_from_slice(&JOB_COLUMNS[6..]);
        columns.extend(LOSS_COLUMNS.iter().map(|(_, c)| *c));
        columns.extend(other_keys().map(setting));
        columns.extend_from_slice(&PRUNE_COLUMNS);
    } else {
        columns.extend(other_keys().filter(|k| varying.iter().any(|v| v.as_str() == *k)).map(setting));
        columns.extend(LOSS_COLUMNS.iter().filter(|(o, _)| *o == results.objective).map(|(_, c)| *c));
        columns.extend_from_slice(&JOB_COLUMNS[6..]);
        if results.pruned_count() > 0 {
            columns.extend_from_slice(&PRUNE_COLUMNS[1..3]);
        }
    }
    let share = results.features.as_ref().and_then(|f| f.share_per_job(&results.sweep.id, results.jobs.len()));
    let rows = results.jobs.iter().map(|job| columns.iter().map(|c| job_cell(job, c.key, share)).collect()).collect();
    Table { columns, rows }
}

/// A k-fold sweep's table: one row per configuration, with the mean and the
/// sample standard deviation of the best valid accuracy over its folds.
fn folds_table(results: &SweepResults) -> Table {
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
    let rows = results
        .folds()
        .iter()
        .map(|group| {
            let first = &group.first().row;
            let done = group.accuracies.len();
            vec![
                Cell::text(&first.id),
                Cell::int(first.batch_size),
                Cell::int(first.workers),
                Cell::float(first.lr, first.lr.to_string()),
                Cell::float(first.momentum, first.momentum.to_string()),
                Cell::int(first.epochs),
                Cell { text: format!("{done}/{}", group.members.len()), json: done.into() },
                Cell::opt_float(group.mean, acc),
                Cell::opt_float(group.std, acc),
                Cell::text(group.status.as_str()),
                Cell::float(group.seconds, format!("{:.1}", group.seconds)),
            ]
        })
        .collect();
    Table { columns, rows }
}

/// Prints a sweep's jobs, sorted by `sort` (accuracies best first), else
/// with `by_objective` by the sweep's objective, best first, else in
/// expansion order (`sweep run`'s final table); a k-fold
/// sweep prints one row per configuration over its folds.
pub fn print_jobs(
    store: &Store,
    sweep: SweepRow,
    format: Format,
    sort: Option<&str>,
    by_objective: bool,
) -> anyhow::Result<()> {
    let mut results = load(store, sweep)?;
    let mut out = std::io::stdout().lock();
    if results.is_kfold() {
        if format == Format::Table {
            let sweep = &results.sweep;
            let (name, id) = (printable(&sweep.name), printable(&sweep.id));
            writeln!(out, "sweep {name} ({id}), k-fold: mean and standard deviation over the folds")?;
        }
        write!(out, "{}", folds_table(&results).render(format))?;
        return Ok(());
    }
    match sort {
        Some(key) => results.sort_by(key).context("--sort")?,
        None if by_objective => results.sort_by_objective(),
        None => {}
    }
    if format == Format::Table {
        let objective = results.objective;
        let how = if objective.maximised() { "highest" } else { "lowest" };
        let (name, id) = (printable(&results.sweep.name), printable(&results.sweep.id));
        let order = if sort.is_none() && by_objective {
            format!(", best first by {} ({how})", objective.name())
        } else {
            String::new()
        };
        writeln!(out, "sweep {name} ({id}){order}")?;
    }
    write!(out, "{}", jobs_table(&results, format).render(format))?;
    if let (Format::Table, Some(features)) = (format, &results.features) {
        writeln!(out, "{}", features_line(features, &results.sweep.id))?;
        if features.share_per_job(&results.sweep.id, results.jobs.len()).is_some_and(|s| s > 0.0) {
            writeln!(out, "Total s: a job's head seconds and its share of the backbone pass")?;
        }
    }
    if let (Format::Table, Some(split)) = (format, SplitInfo::of(&results.sweep)) {
        writeln!(out, "{}", printable(&split.line()))?;
    }
    let pruned = results.pruned_count();
    if format == Format::Table && pruned > 0 {
        writeln!(
            out,
            "{pruned} job(s) pruned: stopped at the epoch in `Pruned At`, behind the others (`sweep table --format \
             json` says why); their epochs are kept"
        )?;
    }
    let same = results.same_as_count();
    let once = results.trained_once_count();
    if format == Format::Table && same > 0 && once == same {
        writeln!(
            out,
            "{same} job(s) differ from the job in `Same As` only in workers, which sets the decode threads of the \
             one backbone pass: trained once, the result shared"
        )?;
    } else if format == Format::Table && same > 0 {
        writeln!(
            out,
            "{same} job(s) differ from the job in `Same As` only in workers, which sets the decode threads of the \
             one backbone pass: same accuracy, their times side by side"
        )?;
    }
    Ok(())
}

/// Where the features came from and what their backbone pass cost, in one line.
fn features_line(features: &Features, sweep_id: &str) -> String {
    let pass = features.pass.as_ref().and_then(|p| {
        let seconds = p.seconds?;
        let rate = features.images_per_second().map_or(String::new(), |r| format!(", {r:.1} images/s"));
        let whose = if p.sweep_id == sweep_id { String::new() } else { format!(" by sweep {}", p.sweep_id) };
        Some(format!("a backbone pass of {seconds:.1} s{rate}{whose}"))
    });
    match (features.reused, pass) {
        (false, Some(pass)) => format!("features: {} images, computed by {pass}", features.images),
        (true, Some(pass)) => {
            format!("features: {} images, reused from the cache (computed by {pass})", features.images)
        }
        (true, None) => format!("features: {} images, reused from the cache", features.images),
        (false, None) => format!("features: {} images, computed", features.images),
    }
}

pub fn table(global: &GlobalArgs, args: &TableArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    print_jobs(&store, sweep, args.format, args.sort.as_deref(), true)?;
    Ok(Outcome::Success)
}

pub fn show(global: &GlobalArgs, args: &ShowArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let id = store.resolve_job(&args.job)?;
    // A job never trained itself shows the epochs of the job trained for it.
    let trained_as = store.trained_as(&id)?;
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
        .epochs(trained_as.as_deref().unwrap_or(&id))?
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
        match &trained_as {
            Some(trained) => writeln!(
                out,
                "job {}: not trained, the epochs of job {} (the same settings but for speed)",
                printable(&id),
                printable(trained)
            )?,
            None => writeln!(out, "job {}", printable(&id))?,
        }
    }
    write!(out, "{}", Table { columns, rows }.render(args.format))?;
    Ok(Outcome::Success)
}

/// The images `skip_bad_images` left out of a sweep's last run: how many, and
/// in JSON the list (`path`, `problem`), empty when none were.
fn skipped_cell(split_json: Option<&str>) -> Cell {
    let skipped = split_json
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("skipped").cloned())
        .unwrap_or_else(|| serde_json::json!([]));
    let n = skipped.as_array().map_or(0, Vec::len);
    Cell { text: n.to_string(), json: skipped }
}

pub fn status(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let mut columns =
        vec![col("sweep_id", "Sweep", false), col("name", "Name", false), col("created_at", "Created", false)];
    columns.extend(Status::ALL.iter().map(|s| col(s.as_str(), s.as_str(), true)));
    columns.extend([
        col("features", "Features", false),
        col("feature_images", "Images", true),
        col("feature_pass_seconds", "Pass s", true),
        col("feature_images_per_second", "Images/s", true),
        col("skipped_images", "Skipped", true),
        col("split", "Split", false),
    ]);
    let mut rows = Vec::new();
    for s in store.sweeps()? {
        let mut row = vec![Cell::text(&s.id), Cell::text(&s.name), Cell::text(&s.created_at)];
        row.extend(
            Status::ALL.iter().map(|st| Cell::int(s.counts.iter().find(|c| c.0 == *st).map_or(0, |c| c.1) as i64)),
        );
        row.push(match s.features_reused {
            Some(true) => Cell::text("cached"),
            Some(false) => Cell::text("computed"),
            None => Cell::none(),
        });
        let features = Features::of(&store, &s)?;
        let pass_seconds = features.as_ref().and_then(|f| f.pass.as_ref()?.seconds);
        row.extend([
            Cell::opt_int(features.as_ref().map(|f| f.images)),
            Cell::opt_float(pass_seconds, |x| format!("{x:.1}")),
            Cell::opt_float(features.as_ref().and_then(Features::images_per_second), |x| format!("{x:.1}")),
            skipped_cell(s.split_json.as_deref()),
            match SplitInfo::of(&s) {
                Some(split) => Cell { text: split.cell(), json: split.json },
                None => Cell::none(),
            },
        ]);
        rows.push(row);
    }
    write!(std::io::stdout().lock(), "{}", Table { columns, rows }.render(args.format))?;
    Ok(Outcome::Success)
}
