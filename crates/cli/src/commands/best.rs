//! `sweep best`: the best job of a sweep (by its objective) as a complete
//! `[train]` section, to paste into a sweep file: every train key with the
//! value the job ran with, so the pasted file plans the same job id.

use std::io::Write;

use anyhow::bail;
use sweep_scheduler::TrainKey;
use sweep_store::Store;

use crate::args::{BestArgs, BestFormat, GlobalArgs};
use crate::output::printable;
use crate::Outcome;

pub fn best(global: &GlobalArgs, args: &BestArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let results = super::table::load(&store, sweep)?;
    let objective = results.objective;
    let Some(job) = results.best() else {
        bail!("sweep {}: no job has a recorded epoch yet: no best job", printable(&results.sweep.name));
    };
    let score = job.score(objective).unwrap_or(f64::NAN);
    // Every train key, in the sweep file's order, as the job recorded it
    // (canonical JSON: whole numbers, shortest round-trip reals, quoted
    // names; each is a TOML value as it stands).
    let mut train: Vec<(&str, &serde_json::Value)> = Vec::new();
    let mut missing = Vec::new();
    for key in TrainKey::ALL {
        match job.config.get(key.name()) {
            Some(value) => train.push((key.name(), value)),
            None => missing.push(key.name()),
        }
    }
    if !missing.is_empty() {
        bail!("job {}: its recorded settings lack {}", printable(&job.row.id), missing.join(", "));
    }
    let direction = if objective.maximised() { "maximised" } else { "minimised" };
    let mut out = std::io::stdout().lock();
    match args.format {
        BestFormat::Json => {
            let value = serde_json::json!({
                "sweep": results.sweep.id,
                "sweep_name": results.sweep.name,
                "job_id": job.row.id,
                "objective": objective.name(),
                "maximised": objective.maximised(),
                "score": score,
                "best_epoch": job.row.best_epoch,
                "best_valid_acc": job.row.best_valid_acc,
                "fold": job.fold(),
                "train": train.iter().map(|(k, v)| ((*k).to_owned(), (*v).clone())).collect::<serde_json::Map<_, _>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        BestFormat::Toml => {
            // Comments are one line each: names from the database are escaped.
            let (name, id) = (printable(&results.sweep.name), printable(&results.sweep.id));
            writeln!(out, "# best job {} of sweep {name} ({id})", printable(&job.row.id))?;
            writeln!(out, "# score: {} = {score} ({direction})", objective.name())?;
            if let (Some(acc), Some(epoch)) = (job.row.best_valid_acc, job.row.best_epoch) {
                writeln!(out, "# best valid accuracy {acc} at epoch {epoch}")?;
            }
            if let Some(fold) = job.fold() {
                writeln!(out, "# fold {fold} of a k-fold sweep: paste with the same [data] folds")?;
            }
            writeln!(out, "[train]")?;
            for (key, value) in train {
                writeln!(out, "{key} = {}", toml_value(value))?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// A recorded setting as a TOML value: numbers as JSON writes them (a real
/// keeps its `.0` or exponent, so it stays a float) and strings as JSON
/// quotes them (JSON's escapes are all TOML's too).
fn toml_value(value: &serde_json::Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_stay_reals() {
        assert_eq!(toml_value(&serde_json::json!(0.0)), "0.0");
        assert_eq!(toml_value(&serde_json::json!(16)), "16");
        assert_eq!(toml_value(&serde_json::json!("a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn the_plot_keys_are_the_train_keys() {
        let names: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(crate::args::TRAIN_KEYS.to_vec(), names);
    }
}
