//! `sweep split [SWEEP] --out split.csv`: the split a recorded sweep used,
//! as a split file (`id,set[,fold]`) that `[data] split` reads back.

use std::io::Write;

use anyhow::Context;

use crate::args::{GlobalArgs, SplitArgs};
use crate::Outcome;

pub fn split(global: &GlobalArgs, args: &SplitArgs) -> anyhow::Result<Outcome> {
    let recorded = sweep_scheduler::preflight::recorded_split(&global.db, args.sweep.as_deref())?;
    let text = sweep_worker::split_csv(&recorded.ids, &recorded.splits, recorded.folds)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("{}: cannot write", path.display()))?;
            if !global.quiet {
                let hash = sweep_worker::split_hash(&recorded.splits);
                eprintln!(
                    "{}: the split of sweep {} ({} images, hash {hash}); use it with `split = \"{}\"` in [data]",
                    path.display(),
                    recorded.sweep_id,
                    recorded.ids.len(),
                    path.display()
                );
            }
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(Outcome::Success)
}
