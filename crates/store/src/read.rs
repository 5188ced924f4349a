//! Reads: sweeps, jobs, epochs, checkpoints and feature passes.

use crate::sql::{args, Row, Tx};
use crate::{EpochRow, Error, FeatureRun, JobRow, Status, Store, SweepRow};

/// The schema version that added the `feature_runs` table.
const FEATURE_RUNS: i64 = 2;

/// A checkpoint row `c`'s state: its own, or (an empty state: a best
/// recorded at the epoch `last` holds, schema 8) its job's `last` one.
pub(crate) const CHECKPOINT_STATE: &str = "CASE WHEN length(c.state) = 0 THEN l.state ELSE c.state END";

/// The checkpoint rows `c`, each with its job's `last` row `l`.
pub(crate) const CHECKPOINT_WITH_LAST: &str =
    "FROM checkpoints c LEFT JOIN checkpoints l ON l.job_id = c.job_id AND l.kind = 'last'";

impl Store {
    /// A sweep by id, id prefix or name; of several, the one last submitted
    /// or run (its latest feature pass, computed or reused: a sweep file run
    /// again on data that changed back finds its old sweep). Without one,
    /// the latest in the same order.
    pub fn find_sweep(&self, which: Option<&str>) -> Result<SweepRow, Error> {
        let schema = self.schema;
        let id: Option<String> = self.read(|tx| {
            // The later of two values: SQLite's two-argument `max`, PostgreSQL's `greatest`.
            let max = if tx.is_postgres() { "greatest" } else { "max" };
            let row = match which {
                None if schema >= FEATURE_RUNS => tx.query_opt(
                    &format!(
                        "SELECT id FROM sweeps s
                         ORDER BY {max}(created_at, coalesce((SELECT max(f.recorded_at) FROM feature_runs f
                             WHERE f.sweep_id = s.id), '')) DESC, rowid DESC LIMIT 1"
                    ),
                    &[],
                )?,
                None => tx.query_opt("SELECT id FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1", &[])?,
                Some(w) if schema >= FEATURE_RUNS => tx.query_opt(
                    &format!(
                        "SELECT id FROM sweeps s WHERE id = ?1 OR name = ?1 OR (length(?1) >= 4 AND id LIKE ?1 || '%')
                         ORDER BY (id = ?1) DESC,
                             {max}(created_at, coalesce((SELECT max(f.recorded_at) FROM feature_runs f
                                 WHERE f.sweep_id = s.id), '')) DESC, rowid DESC LIMIT 1"
                    ),
                    args![w],
                )?,
                Some(w) => tx.query_opt(
                    "SELECT id FROM sweeps WHERE id = ?1 OR name = ?1 OR (length(?1) >= 4 AND id LIKE ?1 || '%')
                     ORDER BY (id = ?1) DESC, created_at DESC, rowid DESC LIMIT 1",
                    args![w],
                )?,
            };
            row.map(|r| r.get(0)).transpose()
        })?;
        let id = id.ok_or_else(|| match which {
            None => Error::NotFound(format!("{}: no sweeps yet (submit one with `sweep run FILE`)", self.path)),
            Some(w) => Error::NotFound(format!("{}: no sweep named or with id `{w}`", self.path)),
        })?;
        self.read(|tx| sweep_row(tx, &id))
    }

    /// Every sweep, oldest first, with job counts.
    pub fn sweeps(&self) -> Result<Vec<SweepRow>, Error> {
        self.read(|tx| {
            let ids: Vec<String> = tx
                .query("SELECT id FROM sweeps ORDER BY created_at, rowid", &[])?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_, _>>()?;
            ids.iter().map(|id| sweep_row(tx, id)).collect()
        })
    }

    /// The jobs of a sweep, in expansion order.
    pub fn jobs(&self, sweep_id: &str) -> Result<Vec<JobRow>, Error> {
        let sql = format!(
            "{JOB_COLUMNS} FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id WHERE s.sweep_id = ?1 ORDER BY s.position"
        );
        self.read(|tx| tx.query(&sql, args![sweep_id])?.iter().map(job_row).collect())
    }

    /// One job by its full id, `None` when the database has no such job.
    pub fn job(&self, job_id: &str) -> Result<Option<JobRow>, Error> {
        let sql = format!("{JOB_COLUMNS} FROM jobs j WHERE j.id = ?1");
        self.read(|tx| tx.query_opt(&sql, args![job_id])?.as_ref().map(job_row).transpose())
    }

    /// The sizes of a job's checkpoints without reading them: `(kind, epoch,
    /// bytes)`, by kind.
    pub fn checkpoint_sizes(&self, job_id: &str) -> Result<Vec<(String, i64, i64)>, Error> {
        self.read(|tx| {
            tx.query(
                // `length` of the columns themselves: SQLite then reads no blob.
                &format!(
                    "SELECT c.kind, c.epoch, CASE WHEN length(c.state) = 0 THEN length(l.state) ELSE length(c.state) END
                     {CHECKPOINT_WITH_LAST} WHERE c.job_id = ?1 ORDER BY c.kind"
                ),
                args![job_id],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect()
        })
    }

    /// The ids of the sweeps a job belongs to, oldest first.
    pub fn sweeps_of_job(&self, job_id: &str) -> Result<Vec<String>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT s.id FROM sweep_jobs sj JOIN sweeps s ON s.id = sj.sweep_id WHERE sj.job_id = ?1
                 ORDER BY s.created_at, s.rowid",
                args![job_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    /// The full id of a job from its id or a unique prefix of at least 4 characters.
    pub fn resolve_job(&self, id: &str) -> Result<String, Error> {
        let ids: Vec<String> = self.read(|tx| {
            tx.query("SELECT id FROM jobs WHERE id = ?1 OR (length(?1) >= 4 AND id LIKE ?1 || '%') LIMIT 2", args![id])?
                .iter()
                .map(|r| r.get(0))
                .collect()
        })?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotFound(format!("{}: no job `{id}`", self.path))),
            _ => Err(Error::NotFound(format!("{}: `{id}` names several jobs: give more of the id", self.path))),
        }
    }

    /// Every recorded epoch of a job, in order.
    pub fn epochs(&self, job_id: &str) -> Result<Vec<EpochRow>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds FROM epochs WHERE job_id = ?1
                 ORDER BY epoch",
                args![job_id],
            )?
            .iter()
            .map(|r| {
                Ok(EpochRow {
                    epoch: r.get(0)?,
                    train_loss: r.get(1)?,
                    train_acc: r.get(2)?,
                    valid_loss: r.get(3)?,
                    valid_acc: r.get(4)?,
                    lr: r.get(5)?,
                    seconds: r.get(6)?,
                })
            })
            .collect()
        })
    }

    /// The latest checkpoint of `kind` (`last` or `best`): its epoch and bytes.
    pub fn checkpoint(&self, job_id: &str, kind: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        self.read(|tx| {
            tx.query_opt(
                &format!(
                    "SELECT c.epoch, {CHECKPOINT_STATE} {CHECKPOINT_WITH_LAST} WHERE c.job_id = ?1 AND c.kind = ?2"
                ),
                args![job_id, kind],
            )?
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .transpose()
        })
    }

    /// Every feature pass recorded for a sweep, oldest first.
    pub fn feature_runs(&self, sweep_id: &str) -> Result<Vec<FeatureRun>, Error> {
        self.feature_runs_where("sweep_id = ?1 ORDER BY id", sweep_id)
    }

    /// The latest backbone pass (not a cache hit) that computed the features
    /// of `cache_key`, by whichever sweep ran it.
    pub fn feature_pass(&self, cache_key: &str) -> Result<Option<FeatureRun>, Error> {
        Ok(self.feature_runs_where("cache_key = ?1 AND reused = 0 ORDER BY id DESC LIMIT 1", cache_key)?.pop())
    }

    fn feature_runs_where(&self, condition: &str, value: &str) -> Result<Vec<FeatureRun>, Error> {
        if self.schema < FEATURE_RUNS {
            // An older file read as it is: it recorded none.
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, sweep_id, cache_key, reused, images, seconds, recorded_at FROM feature_runs WHERE {condition}"
        );
        self.read(|tx| {
            tx.query(&sql, args![value])?
                .iter()
                .map(|r| {
                    Ok(FeatureRun {
                        id: r.get(0)?,
                        sweep_id: r.get(1)?,
                        cache_key: r.get(2)?,
                        reused: r.get(3)?,
                        images: r.get(4)?,
                        seconds: r.get(5)?,
                        recorded_at: r.get(6)?,
                    })
                })
                .collect()
        })
    }
}

/// The columns of a [`JobRow`], over `jobs j`.
const JOB_COLUMNS: &str =
    "SELECT j.id, j.config_json, j.batch_size, j.workers, j.lr, j.momentum, j.epochs, j.status, j.attempts,
        j.error, j.best_valid_acc, j.best_epoch,
        (SELECT e.train_acc FROM epochs e WHERE e.job_id = j.id ORDER BY e.epoch DESC LIMIT 1),
        (SELECT count(*) FROM epochs e WHERE e.job_id = j.id),
        j.seconds,
        (SELECT min(e.valid_loss) FROM epochs e WHERE e.job_id = j.id),
        (SELECT min(e.train_loss) FROM epochs e WHERE e.job_id = j.id)";

/// A row of [`JOB_COLUMNS`].
fn job_row(r: &Row) -> Result<JobRow, Error> {
    Ok(JobRow {
        id: r.get(0)?,
        config_json: r.get(1)?,
        batch_size: r.get(2)?,
        workers: r.get(3)?,
        lr: r.get(4)?,
        momentum: r.get(5)?,
        epochs: r.get(6)?,
        status: Status::parse(&r.get::<String>(7)?),
        attempts: r.get(8)?,
        error: r.get(9)?,
        best_valid_acc: r.get(10)?,
        best_epoch: r.get(11)?,
        final_train_acc: r.get(12)?,
        epochs_done: r.get(13)?,
        seconds: r.get(14)?,
        best_valid_loss: r.get(15)?,
        best_train_loss: r.get(16)?,
    })
}

/// A sweep's row with its job counts.
fn sweep_row(tx: &mut Tx<'_, '_>, id: &str) -> Result<SweepRow, Error> {
    let found = tx.query_opt(
        "SELECT id, name, spec_json, source, source_path, created_at, features_reused, features_key, split_json
         FROM sweeps WHERE id = ?1",
        args![id],
    )?;
    let Some(r) = found else { return Err(Error::NotFound(format!("no sweep `{id}`"))) };
    let mut row = SweepRow {
        id: r.get(0)?,
        name: r.get(1)?,
        spec_json: r.get(2)?,
        source: r.get(3)?,
        source_path: r.get(4)?,
        created_at: r.get(5)?,
        features_reused: r.get(6)?,
        features_key: r.get(7)?,
        split_json: r.get(8)?,
        counts: Vec::new(),
    };
    let mut counts: Vec<(Status, usize)> = tx
        .query(
            "SELECT j.status, count(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id WHERE s.sweep_id = ?1
             GROUP BY j.status",
            args![id],
        )?
        .iter()
        .map(|r| Ok((Status::parse(&r.get::<String>(0)?), r.get::<i64>(1)? as usize)))
        .collect::<Result<_, Error>>()?;
    counts.sort();
    row.counts = counts;
    Ok(row)
}
