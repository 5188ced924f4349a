//! `sweep export`: a sweep's results as files other tools read: `jobs.csv`,
//! `epochs.csv`, the sweep file as submitted, and each job's best head.

use std::path::Path;

use anyhow::Context;
use sweep_store::Store;

use crate::args::{ExportArgs, Format, GlobalArgs};
use crate::output::printable;
use crate::Outcome;

/// Whether a job id read from a database is one sweep makes (lowercase hex
/// digits, `canonical.rs`), and so a safe file name: anything else (`..`,
/// a slash, a control character) could place a file outside the folder.
fn is_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file name the sweep file is exported under: the name it was run
/// from, when that is a plain `.toml` or `.json` name.
fn source_name(source_path: Option<&str>) -> String {
    source_path
        .and_then(|p| Path::new(p).file_name())
        .and_then(|n| n.to_str())
        .filter(|n| {
            (n.ends_with(".toml") || n.ends_with(".json")) && !n.starts_with('.') && !n.chars().any(|c| c.is_control())
        })
        .map_or_else(|| "sweep.toml".to_owned(), str::to_owned)
}

pub fn export(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let dir = &args.out;
    let heads = dir.join("heads");
    std::fs::create_dir_all(&heads).with_context(|| format!("{}: cannot create", heads.display()))?;
    let write = |path: &Path, bytes: &[u8]| -> anyhow::Result<()> {
        std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
    };

    let mut results = super::table::load(&store, sweep)?;
    // The rows of `sweep table --format csv`: best first by the objective.
    results.sort_by_objective();
    let sweep = &results.sweep;
    write(&dir.join("jobs.csv"), super::table::jobs_table(&results, Format::Csv).render(Format::Csv).as_bytes())?;

    let mut epochs = csv::Writer::from_writer(Vec::new());
    epochs.write_record(["job_id", "epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds"])?;
    let mut exported_heads = 0;
    let mut refused = 0;
    for job in &results.jobs {
        let id = &job.row.id;
        if !is_job_id(id) {
            eprintln!(
                "warning: job `{}`: not an id sweep makes (lowercase hex digits): its head is not exported",
                printable(id)
            );
            refused += 1;
        }
        // A job not trained itself has the epochs and the head of the job trained for it.
        let trained = job.trained_as.as_deref().unwrap_or(id);
        for e in store.epochs(trained)? {
            let numbers =
                [e.train_loss, e.train_acc, e.valid_loss, e.valid_acc, e.lr, e.seconds].map(|x| x.to_string());
            epochs.write_record([id.clone(), e.epoch.to_string()].iter().chain(&numbers))?;
        }
        if !is_job_id(id) {
            continue;
        }
        if let Some((_, state)) = store.checkpoint(trained, "best")? {
            write(&heads.join(format!("{id}.safetensors")), &state)?;
            exported_heads += 1;
        }
    }
    write(&dir.join("epochs.csv"), &epochs.into_inner().context("epochs.csv")?)?;

    if let Some(source) = &sweep.source {
        write(&dir.join(source_name(sweep.source_path.as_deref())), source.as_bytes())?;
    }
    write(
        &dir.join("sweep.json"),
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&sweep.spec_json)?)?.as_bytes(),
    )?;
    eprintln!(
        "exported sweep {} to {}: {} jobs, {} best heads (safetensors: head.weight, head.bias, momentum buffers)",
        printable(&sweep.name),
        printable(&dir.display().to_string()),
        results.jobs.len(),
        exported_heads
    );
    if refused > 0 {
        eprintln!("error: {refused} job(s) with an id sweep does not make: the database was altered; their heads were not exported");
        return Ok(Outcome::Failure);
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_ids_name_files() {
        assert!(is_job_id("0123456789abcdef"));
        for bad in ["", "../../evil", "ABCDEF", "ab/cd", "ab\\cd", "..", "a\u{1b}", &"a".repeat(65)] {
            assert!(!is_job_id(bad), "{bad:?}");
        }
        assert_eq!(source_name(Some("/x/grid.toml")), "grid.toml");
        for bad in
            [None, Some("/x/.."), Some("/x/jobs.csv"), Some("/x/.hidden.toml"), Some("/x/a\u{1b}.toml"), Some("/x/y")]
        {
            assert_eq!(source_name(bad), "sweep.toml", "{bad:?}");
        }
    }
}
