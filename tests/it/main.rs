//! End-to-end tests: the `sweep` binary, run as a user runs it.

mod adversarial;
mod cdp;
mod cluster;
mod data;
mod devices;
mod fused;
mod hostile;
mod own_data;
mod plan;
mod postgres;
mod prune;
mod results;
mod resume;
mod run;
mod sanity;
mod search;
mod serve;

use std::path::PathBuf;
use std::process::{Command, Output};

/// A scratch folder with a database path, and the binary to run in it.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write fixture");
        path
    }

    /// `sweep ARGS` with `--db` in the scratch folder.
    pub(crate) fn sweep(&self, args: &[&str]) -> Output {
        self.sweep_with(args, &[])
    }

    /// `sweep ARGS` with `--db` in the scratch folder and more environment.
    pub(crate) fn sweep_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
            .args(args)
            .env("SWEEP_DB", self.path("sweep.db"))
            .env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run sweep")
    }
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}
