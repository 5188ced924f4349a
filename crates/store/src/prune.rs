//! Pruning (schema 4): what the pruner reads (the other jobs' values at an
//! epoch, the jobs done) and the decisions it records. A decision is written
//! in the same transaction as the epoch that triggered it, so it is never
//! lost nor made twice: a resumed or second runner reads it as `pruned`.
//!
//! And work nobody repeats: a job linked to the job trained for it
//! (`same_as`), taking its status and best, with no epochs of its own.
//!
//! Plain SQL (no SQLite function), so that another engine can take it as it is.

use std::time::Duration;

use crate::read::{CHECKPOINT_STATE, CHECKPOINT_WITH_LAST};
use crate::sql::{args, Row, Tx};
use crate::write::insert_epoch;
use crate::{now_ms, now_text, Claimed, EpochRow, Error, Status, Store};

/// The schema version that added pruning.
const PRUNING: i64 = 4;

/// The per-epoch value a pruner compares: one column of `epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `valid_acc`.
    ValidAcc,
    /// `valid_loss`.
    ValidLoss,
    /// `train_loss`.
    TrainLoss,
}

impl Metric {
    fn column(self) -> &'static str {
        match self {
            Metric::ValidAcc => "valid_acc",
            Metric::ValidLoss => "valid_loss",
            Metric::TrainLoss => "train_loss",
        }
    }
}

/// Where and why a job was pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRow {
    /// The job.
    pub job_id: String,
    /// The last epoch it ran (its epochs are kept).
    pub epoch: i64,
    /// The ASHA rung it stopped at (0 is the first), `None` for the median rule.
    pub rung: Option<i64>,
    /// Why, with the numbers compared.
    pub reason: String,
}

impl Store {
    /// The `metric` at `epoch` of every other job of the sweep that recorded
    /// that epoch, with its id and status, in expansion order.
    pub fn values_at_epoch(
        &self,
        sweep_id: &str,
        except_job: &str,
        epoch: i64,
        metric: Metric,
    ) -> Result<Vec<(String, Status, f64)>, Error> {
        let sql = format!(
            "SELECT j.id, j.status, e.{} FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
               JOIN epochs e ON e.job_id = j.id AND e.epoch = ?3
             WHERE s.sweep_id = ?1 AND j.id <> ?2 ORDER BY s.position",
            metric.column()
        );
        self.read(|tx| {
            tx.query(&sql, args![sweep_id, except_job, epoch])?
                .iter()
                .map(|r| Ok((r.get(0)?, Status::parse(&r.get::<String>(1)?), r.get(2)?)))
                .collect()
        })
    }

    /// How many of the sweep's jobs are done (every epoch run), those that
    /// took another's result (`same_as`) left out.
    pub fn done_jobs(&self, sweep_id: &str) -> Result<usize, Error> {
        self.read(|tx| {
            tx.value::<i64>(
                "SELECT count(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1 AND j.status = 'done' AND j.same_as IS NULL",
                args![sweep_id],
            )
        })
        .map(|n| n as usize)
    }

    /// Records an epoch as [`Store::record_epoch`] does and, in the same
    /// transaction, that the pruner stopped the job there: it becomes
    /// `pruned` (never claimed again), its lease released.
    #[allow(clippy::too_many_arguments)]
    pub fn record_pruned_epoch(
        &mut self,
        job_id: &str,
        owner: &str,
        epoch: &EpochRow,
        state: &[u8],
        is_best: bool,
        lease: Duration,
        rung: Option<i64>,
        reason: &str,
        wait: bool,
    ) -> Result<(), Error> {
        let held = self.write(|tx| {
            if !insert_epoch(tx, job_id, owner, epoch, state, is_best, lease)? {
                return Ok(false);
            }
            mark_pruned(tx, job_id, epoch.epoch, rung, reason, wait)?;
            Ok(true)
        })?;
        match held {
            true => Ok(()),
            false => Err(Error::LeaseLost { job_id: job_id.to_owned() }),
        }
    }

    /// Where and why each pruned job of the sweep stopped, in expansion
    /// order (none in a file older than schema 4, read as it is).
    pub fn prune_decisions(&self, sweep_id: &str) -> Result<Vec<PruneRow>, Error> {
        if self.schema < PRUNING {
            return Ok(Vec::new());
        }
        self.read(|tx| {
            tx.query(
                "SELECT j.id, j.prune_epoch, j.prune_rung, j.prune_reason FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1 AND j.status IN ('pruned', 'waiting') ORDER BY s.position",
                args![sweep_id],
            )?
            .iter()
            .map(prune_row)
            .collect()
        })
    }

    /// One job's prune decision, if it was pruned.
    pub fn prune_decision(&self, job_id: &str) -> Result<Option<PruneRow>, Error> {
        if self.schema < PRUNING {
            return Ok(None);
        }
        self.read(|tx| {
            tx.query_opt(
                "SELECT id, prune_epoch, prune_rung, prune_reason FROM jobs WHERE id = ?1 AND status = 'pruned'",
                args![job_id],
            )?
            .as_ref()
            .map(prune_row)
            .transpose()
        })
    }

    /// Closes a job held by `owner` as a copy of `trained`, which ended
    /// (done or pruned): it takes that job's status, best and prune decision,
    /// records no epoch, and its lease is released. Returns false, changing
    /// nothing, while `trained` has not ended.
    pub fn link_same_as(&self, job_id: &str, owner: &str, trained: &str) -> Result<bool, Error> {
        let linked = self.write(|tx| {
            let status: Option<String> =
                tx.query_opt("SELECT status FROM jobs WHERE id = ?1", args![trained])?.map(|r| r.get(0)).transpose()?;
            if !matches!(status.as_deref(), Some("done" | "pruned")) {
                return Ok(None);
            }
            let n = tx.exec(
                "UPDATE jobs SET status = (SELECT p.status FROM jobs p WHERE p.id = ?3),
                        best_valid_acc = (SELECT p.best_valid_acc FROM jobs p WHERE p.id = ?3),
                        best_epoch = (SELECT p.best_epoch FROM jobs p WHERE p.id = ?3),
                        prune_epoch = (SELECT p.prune_epoch FROM jobs p WHERE p.id = ?3),
                        prune_rung = (SELECT p.prune_rung FROM jobs p WHERE p.id = ?3),
                        prune_reason = (SELECT p.prune_reason FROM jobs p WHERE p.id = ?3),
                        finished_at = (SELECT p.finished_at FROM jobs p WHERE p.id = ?3),
                        same_as = ?3, lease_owner = NULL, lease_expires = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                args![job_id, owner, trained],
            )?;
            Ok(Some(n))
        })?;
        match linked {
            None => Ok(false),
            Some(1) => Ok(true),
            Some(_) => Err(Error::LeaseLost { job_id: job_id.to_owned() }),
        }
    }

    /// The job trained for `job_id`, whose epochs it shares, if it was linked.
    pub fn trained_as(&self, job_id: &str) -> Result<Option<String>, Error> {
        if self.schema < PRUNING {
            return Ok(None);
        }
        self.read(|tx| {
            tx.query_opt("SELECT same_as FROM jobs WHERE id = ?1", args![job_id])?
                .map(|r| r.get::<Option<String>>(0))
                .transpose()
        })
        .map(Option::flatten)
    }

    /// Each linked job of the sweep with the job trained for it.
    pub fn same_as_links(&self, sweep_id: &str) -> Result<Vec<(String, String)>, Error> {
        if self.schema < PRUNING {
            return Ok(Vec::new());
        }
        self.read(|tx| {
            tx.query(
                "SELECT j.id, j.same_as FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1 AND j.same_as IS NOT NULL ORDER BY s.position",
                args![sweep_id],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Whether `job_id` is running under a lease that has run out (its
    /// runner stopped renewing it): any runner may claim it now.
    pub fn lease_lapsed(&self, job_id: &str) -> Result<bool, Error> {
        let now = crate::now_ms();
        self.read(|tx| {
            tx.value::<i64>(
                "SELECT count(*) FROM jobs WHERE id = ?1 AND status = 'running' AND lease_expires < ?2",
                args![job_id, now],
            )
        })
        .map(|n| n > 0)
    }

    /// Starts `job_id` (held by `owner`, with no epoch yet) from where the
    /// done job `shorter` ended: a copy of its epochs and checkpoints, its
    /// best, in one transaction, so that `job_id` resumes from its last
    /// epoch. For a job whose settings equal `shorter`'s but for more epochs
    /// (an epoch does not depend on the total). Returns the epochs copied,
    /// or `None`, changing nothing, when `shorter` is not done or `job_id`
    /// is not held or already has epochs.
    pub fn extend_from(&self, job_id: &str, owner: &str, shorter: &str) -> Result<Option<i64>, Error> {
        self.write(|tx| {
            let held = held_without_epochs(tx, job_id, owner)?;
            let done: i64 = tx.value(
                "SELECT count(*) FROM jobs WHERE id = ?1 AND status = 'done' AND same_as IS NULL
                   AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.job_id = ?1 AND c.kind = 'last')",
                args![shorter],
            )?;
            if !held || done != 1 {
                return Ok(None);
            }
            let epochs = tx.exec(
                "INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, recorded_at)
                 SELECT CAST(?1 AS TEXT), epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, recorded_at
                 FROM epochs WHERE job_id = ?2",
                args![job_id, shorter],
            )?;
            tx.exec(
                "INSERT INTO checkpoints (job_id, kind, epoch, state)
                 SELECT CAST(?1 AS TEXT), kind, epoch, state FROM checkpoints WHERE job_id = ?2",
                args![job_id, shorter],
            )?;
            tx.exec(
                "UPDATE jobs SET best_valid_acc = (SELECT p.best_valid_acc FROM jobs p WHERE p.id = ?2),
                        best_epoch = (SELECT p.best_epoch FROM jobs p WHERE p.id = ?2)
                 WHERE id = ?1",
                args![job_id, shorter],
            )?;
            Ok(Some(epochs as i64))
        })
    }

    /// The sweep's trials waiting at an ASHA rung, each with the epoch it
    /// stopped at, in expansion order.
    pub fn waiting_jobs(&self, sweep_id: &str) -> Result<Vec<(String, i64)>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT j.id, j.prune_epoch FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1 AND j.status = 'waiting' ORDER BY s.position",
                args![sweep_id],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Promotes a trial waiting at its rung: claimed for `owner` (as
    /// [`Store::claim`] does) to run on from its last epoch, its stop
    /// forgotten. `None` when it is no longer waiting (another runner
    /// promoted it, or it was pruned).
    pub fn promote(&self, job_id: &str, owner: &str, lease: Duration) -> Result<Option<Claimed>, Error> {
        self.write(|tx| {
            let now = now_ms();
            tx.query_opt(
                "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires = ?4, heartbeat_at = ?3,
                        attempts = attempts + 1, prune_epoch = NULL, prune_rung = NULL, prune_reason = NULL
                 WHERE id = ?1 AND status = 'waiting'
                 RETURNING id, config_json, attempts",
                args![job_id, owner, now, now + lease.as_millis() as i64],
            )?
            .map(|r| Ok(Claimed { id: r.get(0)?, config_json: r.get(1)?, attempts: r.get(2)? }))
            .transpose()
        })
    }

    /// Prunes a trial waiting at its rung, for `reason`, once nothing of its
    /// sweep is left to run (no job pending, interrupted or running, leases
    /// expired or not): only then can no later trial promote it. Returns
    /// whether it was pruned.
    pub fn prune_waiting(&self, sweep_id: &str, job_id: &str, reason: &str) -> Result<bool, Error> {
        let n = self.write(|tx| {
            tx.exec(
                "UPDATE jobs SET status = 'pruned', prune_reason = ?3
                 WHERE id = ?1 AND status = 'waiting'
                   AND NOT EXISTS (SELECT 1 FROM sweep_jobs s JOIN jobs o ON o.id = s.job_id
                                   WHERE s.sweep_id = ?2 AND o.status IN ('pending', 'interrupted', 'running'))",
                args![job_id, sweep_id, reason],
            )
        })?;
        Ok(n == 1)
    }

    /// Closes `job_id` (held by `owner`, with no epoch yet, of `epochs`
    /// epochs) with the first `epochs` epochs of `longer`, a job whose
    /// settings equal its own but for more epochs, trained already: its
    /// epochs, its best (the first best valid accuracy among them, as
    /// training picks it) and that epoch's checkpoint, then done, in one
    /// transaction. Returns the best `(valid_acc, epoch)`, or `None`,
    /// changing nothing, when `longer` has not recorded those epochs, or
    /// its own best checkpoint is not that epoch's (the head to export
    /// would be missing: `job_id` is trained instead), or `job_id` is not
    /// held or already has epochs.
    pub fn take_prefix(
        &self,
        job_id: &str,
        owner: &str,
        longer: &str,
        epochs: i64,
    ) -> Result<Option<(f64, i64)>, Error> {
        self.write(|tx| {
            let held = held_without_epochs(tx, job_id, owner)?;
            if !held || epochs < 1 {
                return Ok(None);
            }
            let rows: Vec<(i64, f64)> = tx
                .query(
                    "SELECT e.epoch, e.valid_acc FROM epochs e JOIN jobs j ON j.id = e.job_id
                     WHERE e.job_id = ?1 AND e.epoch <= ?2 AND j.same_as IS NULL ORDER BY e.epoch",
                    args![longer, epochs],
                )?
                .iter()
                .map(|r| Ok((r.get(0)?, r.get(1)?)))
                .collect::<Result<_, Error>>()?;
            if rows.len() as i64 != epochs {
                return Ok(None);
            }
            let mut best = (f64::NEG_INFINITY, 0);
            for &(epoch, acc) in &rows {
                if acc > best.0 {
                    best = (acc, epoch);
                }
            }
            let best_checkpoint: Option<i64> = tx
                .query_opt("SELECT epoch FROM checkpoints WHERE job_id = ?1 AND kind = 'best'", args![longer])?
                .map(|r| r.get(0))
                .transpose()?;
            if best.1 == 0 || best_checkpoint != Some(best.1) {
                return Ok(None);
            }
            tx.exec(
                "INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, recorded_at)
                 SELECT CAST(?1 AS TEXT), epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds, recorded_at
                 FROM epochs WHERE job_id = ?2 AND epoch <= ?3",
                args![job_id, longer, epochs],
            )?;
            // Its own copy of the best state: the `last` it may stand for is
            // not copied unless it ended at `epochs`.
            tx.exec(
                &format!(
                    "INSERT INTO checkpoints (job_id, kind, epoch, state)
                     SELECT CAST(?1 AS TEXT), c.kind, c.epoch, {CHECKPOINT_STATE} {CHECKPOINT_WITH_LAST}
                     WHERE c.job_id = ?2 AND (c.kind = 'best' OR (c.kind = 'last' AND c.epoch = ?3))"
                ),
                args![job_id, longer, epochs],
            )?;
            tx.exec(
                "UPDATE jobs SET status = 'done', best_valid_acc = ?3, best_epoch = ?4, finished_at = ?5,
                        lease_owner = NULL, lease_expires = NULL
                 WHERE id = ?1 AND lease_owner = ?2",
                args![job_id, owner, best.0, best.1, now_text()],
            )?;
            Ok(Some(best))
        })
    }
}

/// Marks job `job_id` stopped by the pruner after `epoch` (`wait`: waiting
/// at ASHA rung `rung` for a promotion), its lease released: the second half
/// of [`Store::record_pruned_epoch`]'s transaction.
pub(crate) fn mark_pruned(
    tx: &mut Tx<'_, '_>,
    job_id: &str,
    epoch: i64,
    rung: Option<i64>,
    reason: &str,
    wait: bool,
) -> Result<(), Error> {
    let status = if wait { "waiting" } else { "pruned" };
    tx.exec(
        "UPDATE jobs SET status = ?5, prune_epoch = ?2, prune_rung = ?3, prune_reason = ?4,
                lease_owner = NULL, lease_expires = NULL
         WHERE id = ?1",
        args![job_id, epoch, rung, reason, status],
    )?;
    Ok(())
}

/// Whether `owner` holds `job_id`, running, with no epoch recorded yet: a
/// job that may take another's epochs.
fn held_without_epochs(tx: &mut Tx<'_, '_>, job_id: &str, owner: &str) -> Result<bool, Error> {
    let held: i64 = tx.value(
        "SELECT count(*) FROM jobs WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'
           AND NOT EXISTS (SELECT 1 FROM epochs e WHERE e.job_id = ?1)",
        args![job_id, owner],
    )?;
    Ok(held == 1)
}

/// A prune decision's row: id, epoch, rung, reason.
fn prune_row(r: &Row) -> Result<PruneRow, Error> {
    Ok(PruneRow {
        job_id: r.get(0)?,
        epoch: r.get::<Option<i64>>(1)?.unwrap_or(0),
        rung: r.get(2)?,
        reason: r.get::<Option<String>>(3)?.unwrap_or_default(),
    })
}
