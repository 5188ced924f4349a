//! `sweep importance`: each varying key's first-order share of the variance
//! of a sweep's best valid accuracy, computed by `sweep-results`.

use std::io::Write;

use sweep_results::Importance;
use sweep_store::Store;

use crate::args::{Format, GlobalArgs, ImportanceArgs};
use crate::commands::table::load;
use crate::output::{printable, Cell, Column, Table};
use crate::Outcome;

pub fn importance(global: &GlobalArgs, args: &ImportanceArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let results = load(&store, sweep)?;
    let imp = results.importance();
    let columns = vec![
        Column { key: "key", heading: "Key", numeric: false },
        Column { key: "importance", heading: "Importance", numeric: true },
        Column { key: "levels", heading: "Levels", numeric: true },
    ];
    let rows = imp
        .keys
        .iter()
        .map(|k| vec![Cell::text(&k.key), Cell::float(k.score, format!("{:.3}", k.score)), Cell::int(k.levels as i64)])
        .collect();
    let mut out = std::io::stdout().lock();
    if args.format == Format::Table {
        writeln!(
            out,
            "sweep {}: what explains {} over {} done jobs (first-order variance fractions; unexplained by any one \
             key: {:.3})",
            printable(&results.sweep.name),
            imp.objective,
            imp.jobs,
            imp.unexplained()
        )?;
        if imp.jobs < 2 {
            writeln!(out, "(fewer than two done jobs: nothing to explain yet)")?;
        }
    }
    if args.format == Format::Json {
        let keys: Vec<serde_json::Value> = imp
            .keys
            .iter()
            .map(|k| serde_json::json!({ "key": k.key, "importance": k.score, "levels": k.levels }))
            .collect();
        let doc = serde_json::json!({
            "sweep_id": results.sweep.id,
            "sweep": results.sweep.name,
            "objective": imp.objective,
            "method": Importance::METHOD,
            "jobs": imp.jobs,
            "variance": imp.variance,
            "unexplained": imp.unexplained(),
            "keys": keys,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        write!(out, "{}", Table { columns, rows }.render(args.format))?;
    }
    Ok(Outcome::Success)
}
