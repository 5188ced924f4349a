//! Writes: registering a sweep and its jobs, what a run did about features,
//! and each epoch with its checkpoint.

use std::time::Duration;

use crate::sql::{args, Tx};
use crate::{now_ms, now_text, EpochRow, Error, NewJob, NewSweep, Registered, Store};

impl Store {
    /// Records a sweep and its jobs, idempotently: a known sweep or job is kept
    /// as it is, with everything recorded for it.
    pub fn register_sweep(&mut self, sweep: &NewSweep<'_>, jobs: &[NewJob<'_>]) -> Result<Registered, Error> {
        self.write(|tx| {
            let new_sweep = tx.exec(
                "INSERT INTO sweeps (id, name, spec_json, source, source_path) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                args![sweep.id, sweep.name, sweep.spec_json, sweep.source, sweep.source_path],
            )? == 1;
            let mut new_jobs = 0;
            for (position, job) in jobs.iter().enumerate() {
                new_jobs += tx.exec(
                    "INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    args![job.id, job.config_json, job.batch_size, job.workers, job.lr, job.momentum, job.epochs],
                )?;
                tx.exec(
                    "INSERT INTO sweep_jobs (sweep_id, job_id, position) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    args![sweep.id, job.id, position as i64],
                )?;
            }
            Ok(Registered { new_sweep, new_jobs, known_jobs: jobs.len() - new_jobs })
        })
    }

    /// Records what the sweep's latest run did about features and the split.
    pub fn set_features(&self, sweep_id: &str, key: &str, reused: bool, split_json: &str) -> Result<(), Error> {
        self.write(|tx| {
            tx.exec(
                "UPDATE sweeps SET features_key = ?2, features_reused = ?3, split_json = ?4 WHERE id = ?1",
                args![sweep_id, key, reused, split_json],
            )
        })?;
        Ok(())
    }

    /// Records one feature pass of a sweep's run: `reused` when the features
    /// came from the cache, `images` they cover, `seconds` it took. Returns
    /// the row's id. The sweep must be registered.
    pub fn record_feature_run(
        &self,
        sweep_id: &str,
        key: &str,
        reused: bool,
        images: u64,
        seconds: Option<f64>,
    ) -> Result<i64, Error> {
        let images = i64::try_from(images).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.value(
                "INSERT INTO feature_runs (sweep_id, cache_key, reused, images, seconds, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                args![sweep_id, key, reused, images, seconds, now_text()],
            )
        })
    }

    /// Records one finished epoch and the state to resume from, in one
    /// transaction, if `owner` still holds the job's lease. With `is_best`,
    /// the state is also kept as the job's best.
    pub fn record_epoch(
        &mut self,
        job_id: &str,
        owner: &str,
        epoch: &EpochRow,
        state: &[u8],
        is_best: bool,
        lease: Duration,
    ) -> Result<(), Error> {
        let held = self.write(|tx| insert_epoch(tx, job_id, owner, epoch, state, is_best, lease))?;
        match held {
            true => Ok(()),
            false => Err(Error::LeaseLost { job_id: job_id.to_owned() }),
        }
    }
}

/// One epoch for [`Store::record_epochs`]: what [`Store::record_epoch`]
/// takes, and the pruner's stop when it stopped the job there.
#[derive(Debug, Clone)]
pub struct EpochRecord {
    /// The job.
    pub job_id: String,
    /// The runner that must hold the job's lease.
    pub owner: String,
    /// The epoch's metrics.
    pub row: EpochRow,
    /// The state to resume from (safetensors bytes).
    pub state: Vec<u8>,
    /// The best epoch so far: its state is also the job's best.
    pub is_best: bool,
    /// How long the lease is renewed for.
    pub lease: Duration,
    /// Stopped by the pruner: `(rung, reason, waits at the rung)`, as
    /// [`Store::record_pruned_epoch`] takes them.
    pub stop: Option<(Option<i64>, String, bool)>,
}

impl Store {
    /// Records `records` in one transaction (one wait for the disk: the
    /// epochs of a group of fused heads), each as [`Store::record_epoch`] or
    /// [`Store::record_pruned_epoch`] would. Returns, in order, whether each
    /// job's lease was still held (`false`: nothing written for it); an error
    /// writes nothing.
    pub fn record_epochs(&mut self, records: &[EpochRecord]) -> Result<Vec<bool>, Error> {
        self.write(|tx| {
            let mut held = Vec::with_capacity(records.len());
            for r in records {
                let ok = insert_epoch(tx, &r.job_id, &r.owner, &r.row, &r.state, r.is_best, r.lease)?;
                if let (true, Some((rung, reason, wait))) = (ok, &r.stop) {
                    crate::prune::mark_pruned(tx, &r.job_id, r.row.epoch, *rung, reason, *wait)?;
                }
                held.push(ok);
            }
            Ok(held)
        })
    }

    /// Records `record` as [`Store::record_epoch`] or, with a stop,
    /// [`Store::record_pruned_epoch`] does.
    pub fn record(&mut self, r: &EpochRecord) -> Result<(), Error> {
        match &r.stop {
            None => self.record_epoch(&r.job_id, &r.owner, &r.row, &r.state, r.is_best, r.lease),
            Some((rung, reason, waits)) => self
                .record_pruned_epoch(&r.job_id, &r.owner, &r.row, &r.state, r.is_best, r.lease, *rung, reason, *waits),
        }
    }
}

/// [`Store::record_epoch`]'s transaction, shared with the pruner's
/// (`prune.rs`): false, writing nothing, when `owner` no longer holds the lease.
pub(crate) fn insert_epoch(
    tx: &mut Tx<'_, '_>,
    job_id: &str,
    owner: &str,
    epoch: &EpochRow,
    state: &[u8],
    is_best: bool,
    lease: Duration,
) -> Result<bool, Error> {
    let now = now_ms();
    let held = tx.exec(
        "UPDATE jobs SET lease_expires = ?3, heartbeat_at = ?4, seconds = seconds + ?5
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
        args![job_id, owner, now + lease.as_millis() as i64, now, epoch.seconds],
    )?;
    if held != 1 {
        // Nothing was changed: committing this writes nothing.
        return Ok(false);
    }
    tx.exec(
        "INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            job_id,
            epoch.epoch,
            epoch.train_loss,
            epoch.train_acc,
            epoch.valid_loss,
            epoch.valid_acc,
            epoch.lr,
            epoch.seconds,
            now_text()
        ],
    )?;
    if !is_best {
        // `last` moves past the best epoch: a best recorded as "`last`'s
        // state" (schema 8) gets its own copy first.
        tx.exec(
            "UPDATE checkpoints SET state = (SELECT l.state FROM checkpoints l WHERE l.job_id = ?1 AND l.kind = 'last')
             WHERE job_id = ?1 AND kind = 'best' AND length(state) = 0",
            args![job_id],
        )?;
    }
    tx.exec(
        "INSERT INTO checkpoints (job_id, kind, epoch, state) VALUES (?1, 'last', ?2, ?3)
             ON CONFLICT (job_id, kind) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
        args![job_id, epoch.epoch, state],
    )?;
    if is_best {
        // The best is this epoch's state, which `last` holds: recorded as an
        // empty state, which means `last`'s, rather than a second copy.
        tx.exec(
            "INSERT INTO checkpoints (job_id, kind, epoch, state) VALUES (?1, 'best', ?2, ?3)
                 ON CONFLICT (job_id, kind) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
            args![job_id, epoch.epoch, &[] as &[u8]],
        )?;
        tx.exec(
            "UPDATE jobs SET best_valid_acc = ?2, best_epoch = ?3 WHERE id = ?1",
            args![job_id, epoch.valid_acc, epoch.epoch],
        )?;
    }
    Ok(true)
}
