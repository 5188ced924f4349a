//! Claims per second on SQLite and on PostgreSQL (issue #13): a sweep of
//! 1,000 jobs drained by 1, 4 and 8 claimers at once, each with its own
//! connection, each claim followed by its `finish` (two transactions a job).
//! Prints the median of 3 runs per case.
//!
//! `cargo bench -p sweep-store --bench claims` for SQLite (a file under
//! `TMPDIR`); with `SWEEP_TEST_PG=postgres://USER@HOST:PORT/postgres` (a
//! server where it may create a database) PostgreSQL too.

#![allow(clippy::print_stdout)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sweep_store::{Finish, Location, NewJob, NewSweep, Store};

const LEASE: Duration = Duration::from_secs(3600);
const JOBS: usize = 1000;

/// Drains a fresh sweep of `JOBS` jobs with `claimers` threads; returns claims per second.
fn drain(location: &Location, run: usize, claimers: usize) -> f64 {
    let sweep_id = format!("s{run}-{claimers}");
    let names: Vec<String> = (0..JOBS).map(|i| format!("{sweep_id}-job{i}")).collect();
    let jobs: Vec<NewJob<'_>> = names
        .iter()
        .map(|id| NewJob { id, config_json: "{}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 3 })
        .collect();
    let sweep = NewSweep { id: &sweep_id, name: "bench", spec_json: "{}", source: None, source_path: None };
    Store::open(location).expect("open").register_sweep(&sweep, &jobs).expect("register");
    let barrier = Arc::new(Barrier::new(claimers + 1));
    let threads: Vec<_> = (0..claimers)
        .map(|t| {
            let (barrier, location, sweep_id) = (barrier.clone(), location.clone(), sweep_id.clone());
            std::thread::spawn(move || {
                let mut store = Store::open(&location).expect("open");
                let owner = format!("bench-{t}");
                barrier.wait();
                let mut n = 0;
                while let Some(job) = store.claim(&sweep_id, &owner, LEASE).expect("claim") {
                    store.finish(&job.id, &owner, Finish::Done).expect("finish");
                    n += 1;
                }
                n
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let claimed: usize = threads.into_iter().map(|t| t.join().expect("claimer")).sum();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(claimed, JOBS, "every job claimed once");
    JOBS as f64 / seconds
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn bench(what: &str, location: &Location) {
    for claimers in [1, 4, 8] {
        let runs: Vec<f64> = (0..3).map(|run| drain(location, run, claimers)).collect();
        println!("{what}: {claimers} claimers: {:.0} claims/s (median of 3: {runs:.0?})", median(runs.clone()));
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    bench("sqlite", &Location::Sqlite(dir.path().join("claims.db")));
    let Ok(admin) = std::env::var("SWEEP_TEST_PG") else {
        println!("postgres: skipped (set SWEEP_TEST_PG)");
        return;
    };
    let name = format!("sweep_bench_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to SWEEP_TEST_PG");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the bench database");
    let Ok(Location::Postgres(url)) = Location::parse(&admin) else { panic!("SWEEP_TEST_PG is not a postgres:// URL") };
    bench("postgres", &Location::Postgres(url.with_database(&name)));
    let _ = client.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
}
