//! `sweep slurm FILE`: submits the sweep to the store, then writes a Slurm
//! job array whose every task is one `sweep worker` for it (and submits the
//! array with `--submit`).
//!
//! Requeue-safe by construction: a task stopped by Slurm (time limit,
//! preemption, `scancel`) gets SIGTERM, and a worker stops at its jobs' last
//! recorded epochs and releases them; one killed outright leaves leases that
//! expire. The same script submitted again finishes the sweep.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::args::{GlobalArgs, SlurmArgs};
use crate::output::printable;
use crate::Outcome;

pub fn slurm(global: &GlobalArgs, args: &SlurmArgs) -> anyhow::Result<Outcome> {
    // Wrong arguments are found before the sweep is registered.
    for line in &args.extra {
        if !line.starts_with("#SBATCH ") || line.contains(['\n', '\r']) {
            bail!("--extra {:?}: give one `#SBATCH --option` line", printable(line));
        }
    }
    let binary = std::env::current_exe().context("cannot find this sweep binary's path for the script")?;
    // The database as the tasks name it: a file by its absolute path; a
    // PostgreSQL URL without its password (never written into a file), which
    // the tasks read from PGPASSWORD (sbatch passes the environment on) or
    // ~/.pgpass.
    let db = match &global.db {
        sweep_store::Location::Sqlite(path) => absolute(path).display().to_string(),
        sweep_store::Location::Postgres(url) => url.to_string(),
    };
    let cache_dir = args.cache_dir.as_deref().map(absolute);
    let (id, name) = super::worker::register(global, &args.file, args.max_jobs, cache_dir.as_deref(), true)?;
    let out = match &args.out {
        Some(path) => path.clone(),
        None => PathBuf::from(format!("sweep-{}.sbatch", job_name(&name))),
    };
    let out = absolute(&out);
    let log = match &args.log {
        Some(pattern) => pattern.clone(),
        None => out.with_file_name("slurm-%A_%a.out").display().to_string(),
    };
    let script = Script {
        args,
        binary: &binary,
        db: &db,
        cache_dir: cache_dir.as_deref(),
        sweep_id: &id,
        name: &name,
        log: &log,
    };
    std::fs::write(&out, script.render()).with_context(|| format!("{}: cannot write the script", out.display()))?;
    let watch = format!("sweep status --db {}", shell_quote(&db));
    if !args.submit {
        eprintln!("wrote {}: submit it with `sbatch {}`, then watch with `{watch}`", out.display(), out.display());
        return Ok(Outcome::Success);
    }
    let sbatch = std::process::Command::new("sbatch")
        .arg("--parsable")
        .arg(&out)
        .output()
        .context("cannot run sbatch: is Slurm installed here? (the script is written: submit it where it is)")?;
    if !sbatch.status.success() {
        bail!("sbatch {} failed: {}", out.display(), printable(String::from_utf8_lossy(&sbatch.stderr).trim()));
    }
    let job = String::from_utf8_lossy(&sbatch.stdout).trim().split(';').next().unwrap_or_default().to_owned();
    writeln!(std::io::stdout().lock(), "{job}")?;
    eprintln!(
        "submitted Slurm job array {job} ({} tasks) for sweep {id}: watch with `{watch}` or `squeue -j {job}`; \
         to finish it after a cancel or a time limit, submit {} again",
        args.workers,
        out.display()
    );
    Ok(Outcome::Success)
}

/// The job-array script.
struct Script<'a> {
    args: &'a SlurmArgs,
    binary: &'a Path,
    db: &'a str,
    cache_dir: Option<&'a Path>,
    sweep_id: &'a str,
    name: &'a str,
    log: &'a str,
}

impl Script<'_> {
    fn render(&self) -> String {
        let a = self.args;
        let mut s = String::from("#!/bin/bash\n");
        s += &format!(
            "# sweep {} ({}): {} tasks, each one `sweep worker`.\n",
            self.sweep_id,
            one_line(self.name),
            a.workers
        );
        s += "# Written by `sweep slurm`. Submitting it again after a cancel, a time limit or a\n";
        s += "# preemption finishes the sweep: recorded epochs are kept, and jobs resume from them.\n";
        s += &format!("#SBATCH --job-name=sweep-{}\n", job_name(self.name));
        s += &format!("#SBATCH --array=0-{}\n", a.workers - 1);
        s += &format!("#SBATCH --time={}\n", a.time);
        s += &format!("#SBATCH --cpus-per-task={}\n", a.cpus_per_worker);
        if a.gpus_per_worker > 0 {
            s += &format!("#SBATCH --gres=gpu:{}\n", a.gpus_per_worker);
        }
        if let Some(p) = &a.partition {
            s += &format!("#SBATCH --partition={p}\n");
        }
        if let Some(account) = &a.account {
            s += &format!("#SBATCH --account={account}\n");
        }
        s += &format!("#SBATCH --output={}\n", self.log);
        s += "#SBATCH --requeue\n";
        for line in &a.extra {
            s += line;
            s += "\n";
        }
        s += "set -euo pipefail\n";
        s += "# Candle's threads: the CPUs Slurm gave this task, not the node's.\n";
        s += "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
        // exec: Slurm's SIGTERM reaches the worker itself, which stops its
        // jobs at their last recorded epoch and releases them.
        let mut cmd = vec![
            shell_quote(&self.binary.display().to_string()),
            "worker".to_owned(),
            "--db".to_owned(),
            shell_quote(self.db),
            "--sweep".to_owned(),
            self.sweep_id.to_owned(),
            "--idle-exit".to_owned(),
            a.idle_exit.to_string(),
        ];
        if let Some(dir) = self.cache_dir {
            cmd.extend(["--cache-dir".to_owned(), shell_quote(&dir.display().to_string())]);
        }
        if a.gpus_per_worker > 0 {
            // Slurm sets CUDA_VISIBLE_DEVICES: the task's GPUs are 0..N.
            let devices: Vec<String> = (0..a.gpus_per_worker).map(|i| format!("cuda:{i}")).collect();
            cmd.extend([
                "--device".to_owned(),
                devices.join(","),
                "--parallel".to_owned(),
                a.gpus_per_worker.to_string(),
            ]);
        }
        s += &format!("exec {}\n", cmd.join(" "));
        s
    }
}

/// A name Slurm shows in `squeue`: letters, digits, `_`, `-` and `.`.
fn job_name(name: &str) -> String {
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).take(40).collect();
    if name.is_empty() {
        "sweep".to_owned()
    } else {
        name
    }
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `s` as one word for bash.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=@%+,".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{job_name, shell_quote};

    #[test]
    fn words_are_quoted_for_bash_only_when_needed() {
        assert_eq!(shell_quote("/data/sweep.db"), "/data/sweep.db");
        assert_eq!(shell_quote("/my data/it's.db"), r"'/my data/it'\''s.db'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn job_names_keep_what_squeue_shows() {
        assert_eq!(job_name("dogs paper/table"), "dogs_paper_table");
        assert_eq!(job_name(""), "sweep");
    }
}
