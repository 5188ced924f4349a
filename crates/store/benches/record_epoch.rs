//! How fast `Store::record_epoch` records epochs in a file database (WAL,
//! `synchronous = FULL`: one fsync'd commit per epoch), with a tiny state and
//! with a ~1 MiB one (a 120x2048 f32 head), and how long `Store::open` takes on
//! a database holding 200 such checkpoints (it runs `PRAGMA quick_check`).
//!
//! `cargo bench -p sweep-store --bench record_epoch` (the folder of the
//! temporary files follows `TMPDIR`). Prints one line per case.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use sweep_store::{EpochRow, Finish, NewJob, NewSweep, Store};

const LEASE: Duration = Duration::from_secs(3600);

fn job(id: &str) -> NewJob<'_> {
    NewJob { id, config_json: "{}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 14 }
}

fn epoch(n: i64) -> EpochRow {
    EpochRow { epoch: n, train_loss: 1.0, train_acc: 0.5, valid_loss: 1.1, valid_acc: 0.4, lr: 0.01, seconds: 0.5 }
}

fn sweep(id: &str) -> NewSweep<'_> {
    NewSweep { id, name: "bench", spec_json: "{}", source: None, source_path: None }
}

/// Records `rows` epochs of one job with `state` as its checkpoint; returns rows per second.
fn record(dir: &std::path::Path, name: &str, rows: i64, state: &[u8], is_best: bool) -> f64 {
    let mut store = Store::open(dir.join(format!("{name}.db"))).expect("open");
    store.register_sweep(&sweep("s"), &[job("a")]).expect("register");
    let claimed = store.claim("s", "bench", LEASE).expect("claim").expect("a job");
    let start = Instant::now();
    for n in 1..=rows {
        store.record_epoch(&claimed.id, "bench", &epoch(n), state, is_best, LEASE).expect("record");
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tiny = vec![1u8; 64];
    let head = vec![1u8; 120 * 2048 * 4];
    let cases: [(&str, i64, &[u8], bool); 3] = [
        ("tiny state (64 B), last only", 2000, &tiny, false),
        ("head state (960 KiB), last only", 300, &head, false),
        ("head state (960 KiB), last + best", 300, &head, true),
    ];
    for (i, (label, rows, state, is_best)) in cases.into_iter().enumerate() {
        let per_s = record(dir.path(), &format!("case{i}"), rows, state, is_best);
        let mib_s = per_s * state.len() as f64 * if is_best { 2.0 } else { 1.0 } / (1 << 20) as f64;
        println!("record_epoch, {label}: {per_s:.0} rows/s ({rows} rows, {mib_s:.1} MiB/s of state)");
    }

    // A database with 100 finished jobs, each with a `last` and a `best` checkpoint.
    let path = dir.path().join("big.db");
    let ids: Vec<String> = (0..100).map(|i| format!("job{i:03}")).collect();
    {
        let mut store = Store::open(&path).expect("open");
        store.register_sweep(&sweep("s"), &ids.iter().map(|id| job(id)).collect::<Vec<_>>()).expect("register");
        while let Some(claimed) = store.claim("s", "bench", LEASE).expect("claim") {
            store.record_epoch(&claimed.id, "bench", &epoch(1), &head, true, LEASE).expect("record");
            store.finish(&claimed.id, "bench", Finish::Done).expect("finish");
        }
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            drop(Store::open(&path).expect("open"));
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("Store::open of a {size:.0} MiB database (200 checkpoints): {:.1} ms (median of 5)", times[2]);
}
