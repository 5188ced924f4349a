//! `sweep export`: a sweep's results as files other tools read: `jobs.csv`,
//! `epochs.csv`, the sweep file as submitted, and each job's best head.

use std::path::Path;

use anyhow::Context;
use sweep_store::Store;

use crate::args::{ExportArgs, Format, GlobalArgs};
use crate::Outcome;

pub fn export(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<Outcome> {
    let store = Store::open_read_only(&global.db)?;
    let sweep = store.find_sweep(args.sweep.as_deref())?;
    let dir = &args.out;
    let heads = dir.join("heads");
    std::fs::create_dir_all(&heads).with_context(|| format!("{}: cannot create", heads.display()))?;
    let write = |path: &Path, bytes: &[u8]| -> anyhow::Result<()> {
        std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
    };

    let results = super::table::load(&store, sweep)?;
    let sweep = &results.sweep;
    write(&dir.join("jobs.csv"), super::table::jobs_table(&results).render(Format::Csv).as_bytes())?;

    let mut epochs = csv::Writer::from_writer(Vec::new());
    epochs.write_record(["job_id", "epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds"])?;
    let mut exported_heads = 0;
    for job in &results.jobs {
        let id = &job.row.id;
        for e in store.epochs(id)? {
            let numbers =
                [e.train_loss, e.train_acc, e.valid_loss, e.valid_acc, e.lr, e.seconds].map(|x| x.to_string());
            epochs.write_record([id.clone(), e.epoch.to_string()].iter().chain(&numbers))?;
        }
        if let Some((_, state)) = store.checkpoint(id, "best")? {
            write(&heads.join(format!("{id}.safetensors")), &state)?;
            exported_heads += 1;
        }
    }
    write(&dir.join("epochs.csv"), &epochs.into_inner().context("epochs.csv")?)?;

    if let Some(source) = &sweep.source {
        let name = sweep
            .source_path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map_or_else(|| "sweep.toml".into(), |n| n.to_string_lossy().into_owned());
        write(&dir.join(name), source.as_bytes())?;
    }
    write(
        &dir.join("sweep.json"),
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&sweep.spec_json)?)?.as_bytes(),
    )?;
    eprintln!(
        "exported sweep {} to {}: {} jobs, {} best heads (safetensors: head.weight, head.bias, momentum buffers)",
        sweep.name,
        dir.display(),
        results.jobs.len(),
        exported_heads
    );
    Ok(Outcome::Success)
}
