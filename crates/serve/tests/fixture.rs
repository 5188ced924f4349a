//! Sweep databases written through the store's own API, as a run writes
//! them: for the API tests and the benchmark.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sweep_store::{EpochRow, Finish, NewJob, NewSweep, Store};

const LEASE: Duration = Duration::from_secs(600);

/// One job's settings and how it goes.
pub struct Plan {
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Batch size.
    pub batch_size: i64,
    /// Epochs planned.
    pub epochs: i64,
    /// Epochs to record (fewer than `epochs`: it stays running).
    pub record: i64,
    /// Fails after recording, with this error.
    pub fail: Option<&'static str>,
}

/// The validation accuracy of a plan at an epoch: rises with the epoch,
/// best at lr 0.01, momentum helps a little, batch size not at all.
pub fn accuracy(p: &Plan, epoch: i64) -> f64 {
    let lr_term = (p.lr.log10() + 2.0).abs(); // 0 at lr = 0.01
    let ceiling = 0.9 - 0.25 * lr_term.min(2.0) + 0.02 * p.momentum;
    ceiling * (1.0 - (-(epoch as f64) / 3.0).exp())
}

/// Registers a sweep of `plans` in `store` and records them.
pub fn add_sweep(store: &mut Store, id: &str, name: &str, plans: &[Plan]) -> Vec<String> {
    let ids: Vec<String> = (0..plans.len()).map(|i| format!("{id}{i:06x}{}", "0".repeat(20))).collect();
    let configs: Vec<String> = plans
        .iter()
        .map(|p| {
            format!(
                r#"{{"batch_size":{},"epochs":{},"lr":{},"momentum":{},"seed":0,"workers":2}}"#,
                p.batch_size, p.epochs, p.lr, p.momentum
            )
        })
        .collect();
    let jobs: Vec<NewJob<'_>> = plans
        .iter()
        .zip(&ids)
        .zip(&configs)
        .map(|((p, id), config)| NewJob {
            id,
            config_json: config,
            batch_size: p.batch_size,
            workers: 2,
            lr: p.lr,
            momentum: p.momentum,
            epochs: p.epochs,
        })
        .collect();
    let sweep = NewSweep { id, name, spec_json: "{}", source: Some("name = \"x\"\n"), source_path: None };
    store.register_sweep(&sweep, &jobs).unwrap();
    for _ in plans {
        let claimed = store.claim(id, "fixture", LEASE).unwrap().expect("a job to claim");
        let i = ids.iter().position(|x| *x == claimed.id).unwrap();
        let p = &plans[i];
        let mut best = f64::NEG_INFINITY;
        for epoch in 1..=p.record {
            let acc = accuracy(p, epoch);
            let row = EpochRow {
                epoch,
                train_loss: 2.0 / epoch as f64,
                train_acc: (acc + 0.05).min(1.0),
                valid_loss: 2.2 / epoch as f64,
                valid_acc: acc,
                lr: p.lr,
                seconds: 0.5,
            };
            let is_best = acc > best;
            best = best.max(acc);
            store.record_epoch(&claimed.id, "fixture", &row, &[7u8; 96], is_best, LEASE).unwrap();
        }
        match (p.fail, p.record == p.epochs) {
            (Some(error), _) => store.finish(&claimed.id, "fixture", Finish::Failed(error)).unwrap(),
            (None, true) => store.finish(&claimed.id, "fixture", Finish::Done).unwrap(),
            (None, false) => {} // still running
        }
    }
    ids
}

/// A grid of `n` plans over lr (log-spaced), momentum and batch size, every
/// one finished after `epochs` epochs.
pub fn grid(n: usize, epochs: i64) -> Vec<Plan> {
    let lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0];
    let momenta = [0.0, 0.5, 0.9, 0.95, 0.99];
    (0..n)
        .map(|i| Plan {
            lr: lrs[i % lrs.len()],
            momentum: momenta[(i / lrs.len()) % momenta.len()],
            batch_size: 8 << ((i / (lrs.len() * momenta.len())) % 8),
            epochs,
            record: epochs,
            fail: None,
        })
        .collect()
}

/// Opens (creating) the database at `path`.
pub fn open(path: &Path) -> Store {
    Store::open(path).unwrap()
}
