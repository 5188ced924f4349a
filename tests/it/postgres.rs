//! Issue #13: the store on PostgreSQL, end to end through the `sweep`
//! program: `sweep run` with `--db postgres://…`, then `table`, `status`,
//! `resume` and `serve` on it, and the same sweep on SQLite giving the same
//! epoch rows. Each test creates its own database on the server that
//! `SWEEP_TEST_PG` names and drops it after; without one it says it is
//! skipped (past the harness's capture) and passes, and under `CI=true` it
//! fails (`.ci/run` starts a server and sets it).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::resume::results_of;
use crate::run::TINY;
use crate::serve::{api, serve};
use crate::{json, stderr, stdout, Env};

/// A database of its own on the test server, dropped with this value.
pub(crate) struct PgDb {
    admin: String,
    name: String,
    /// The database's URL.
    pub(crate) url: String,
}

impl PgDb {
    /// A fresh database, or `None` (said on stderr) without a server.
    pub(crate) fn new() -> Option<PgDb> {
        let Ok(admin) = std::env::var("SWEEP_TEST_PG") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "SWEEP_TEST_PG is not set under CI=true: .ci/run starts a PostgreSQL server and sets it"
            );
            let _ = writeln!(std::io::stderr(), "skipped: PostgreSQL not available (set SWEEP_TEST_PG)");
            return None;
        };
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("sweep_it_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to SWEEP_TEST_PG");
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (head, query) = admin.split_once('?').map_or((admin.as_str(), None), |(h, q)| (h, Some(q)));
        let base = &head[..head.rfind('/').unwrap()];
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Some(PgDb { admin, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

#[test]
fn a_sweep_on_postgres_runs_resumes_and_matches_sqlite() {
    let Some(pg) = PgDb::new() else { return };
    let env = Env::new();
    let file = env.write("tiny.toml", TINY);
    let file = file.to_str().unwrap();
    let out = env.sweep(&["--db", &pg.url, "run", file, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{rows}");
    // Nothing was written beside it: the database is the server's.
    assert!(!env.path("sweep.db").exists());

    // The same sweep on SQLite: the same table and every epoch row the same.
    let sqlite = env.path("sqlite.db");
    let out = env.sweep(&["--db", sqlite.to_str().unwrap(), "run", file, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let on_pg = results_of(&env, &pg.url);
    assert_eq!(on_pg, results_of(&env, sqlite.to_str().unwrap()));
    assert_eq!(on_pg["epochs"].as_object().unwrap().len(), 2);

    // status and resume read and continue it; a second run reuses the jobs.
    let out = env.sweep(&["--db", &pg.url, "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tiny"), "{}", stdout(&out));
    let out = env.sweep(&["--db", &pg.url, "resume", "tiny", "--restart", rows[0]["job_id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(results_of(&env, &pg.url), on_pg, "restarted from epoch 0, the job ends the same");

    // sweep serve reads it.
    let server = serve(&env, &[], &[("SWEEP_DB", pg.url.as_str())]);
    let sweeps = api(&server.url, "/api/sweeps");
    assert_eq!(sweeps[0]["name"], "tiny");
    assert_eq!(sweeps[0]["counts"]["done"], 2);
    drop(server);

    // Claims that wait for other jobs (issue 12): the longer jobs, first in
    // the file, continue the shorter ones, with two slots.
    let epochs = TINY
        .replace("name = \"tiny\"", "name = \"epochs\"")
        .replace("epochs = 3\n", "")
        .replace("lr = [0.01, 0.05]", "lr = [0.02, 0.03]\nepochs = [3, 1]");
    let file = env.write("epochs.toml", &epochs);
    let out = env.sweep(&["--db", &pg.url, "-v", "run", file.to_str().unwrap(), "--parallel", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("continues a done job with fewer epochs").count(), 2, "{}", stderr(&out));
}

#[test]
fn postgres_urls_and_their_errors_never_show_a_password() {
    let env = Env::new();
    // No server listens on port 1: the error names the URL without its password.
    let out = env.sweep(&["--db", "postgres://alice:s3cret@127.0.0.1:1/sweeps", "table"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("postgres://alice@127.0.0.1:1/sweeps: cannot open"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // A URL that is not one is refused as an argument, without its password either.
    let out = env.sweep(&["--db", "postgres://alice:s3cret@host:notaport/x", "table"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    // TLS is not built in: sslmode=require says so.
    let out = env.sweep(&["--db", "postgres://alice@127.0.0.1:1/sweeps?sslmode=require", "table"]);
    assert!(stderr(&out).contains("no TLS"), "{}", stderr(&out));
}
