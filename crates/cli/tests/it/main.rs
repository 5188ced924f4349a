//! End-to-end tests: the `sweep` binary, run as a user runs it.

mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch folder with a database path, and the binary to run in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write fixture");
        path
    }

    /// `sweep ARGS` with `--db` in the scratch folder.
    pub fn sweep(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sweep"))
            .args(args)
            .env("SWEEP_DB", self.path("sweep.db"))
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .output()
            .expect("run sweep")
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("crates/cli is two levels down")
}
