//! Job leases: claiming the next runnable job, renewing and ending a lease,
//! freeing the lease of a dead runner, and making failed jobs claimable again.

use std::collections::HashMap;
use std::time::Duration;

use crate::sql::{args, Row, Tx};
use crate::{now_ms, now_text, Claimed, Error, Finish, Store};

/// Claims a job for owner `?2` at time `?3` until `?4` (`?5`: now, as text).
const CLAIM: &str = "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires = ?4, heartbeat_at = ?3,
        attempts = attempts + 1, error = NULL, started_at = COALESCE(started_at, ?5)";

/// The next runnable job of sweep `?1` at time `?3`: pending, interrupted, or
/// running under an expired lease.
const NEXT_JOB: &str = "SELECT j.id FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
     WHERE s.sweep_id = ?1
       AND (j.status IN ('pending', 'interrupted') OR (j.status = 'running' AND j.lease_expires < ?3))
     ORDER BY s.position LIMIT 1";

/// Claims job `?5` for owner `?1` at time `?2` until `?3` (`?4`: now, as
/// text) if it is still runnable: taken only once when two claimers race.
const CLAIM_JOB: &str = "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_expires = ?3,
        heartbeat_at = ?2, attempts = attempts + 1, error = NULL, started_at = COALESCE(started_at, ?4)
     WHERE id = ?5
       AND (status IN ('pending', 'interrupted') OR (status = 'running' AND lease_expires < ?2))
     RETURNING id, config_json, attempts";

/// Which jobs of sweep `?1` are runnable at time `?2`: pending,
/// interrupted, or running under an expired lease.
const RUNNABLE: &str = "(j.status IN ('pending', 'interrupted') OR (j.status = 'running' AND j.lease_expires < ?2))";

/// Which have run and stopped before their end: interrupted, or running
/// under an expired lease.
const RESUMABLE: &str = "(j.status = 'interrupted' OR (j.status = 'running' AND j.lease_expires < ?2))";

/// How many runnable jobs [`Store::claim_after`] reads at a time.
const PAGE: i64 = 64;

impl Store {
    /// Atomically claims the sweep's next runnable job (pending, interrupted,
    /// or running with an expired lease) for `owner`, leased for `lease`. On
    /// SQLite the `BEGIN IMMEDIATE` transaction excludes other claimers; on
    /// PostgreSQL the job's row is locked with `FOR UPDATE SKIP LOCKED`, so
    /// claimers at once take different jobs without waiting for each other.
    pub fn claim(&mut self, sweep_id: &str, owner: &str, lease: Duration) -> Result<Option<Claimed>, Error> {
        self.claim_after(sweep_id, owner, lease, &HashMap::new())
    }

    /// [`Store::claim`], passing over each job that comes after others
    /// (`after[job]`) while any of those is still to run, running, or
    /// waiting at an ASHA rung: the first runnable job in the sweep's order
    /// that waits for nobody.
    pub fn claim_after(
        &mut self,
        sweep_id: &str,
        owner: &str,
        lease: Duration,
        after: &HashMap<String, Vec<String>>,
    ) -> Result<Option<Claimed>, Error> {
        self.claim_where(sweep_id, owner, lease, after, RUNNABLE)
    }

    /// [`Store::claim_after`] among the jobs that ran and stopped before
    /// their end (interrupted, or under an expired lease) only: a run that
    /// promotes waiting trials resumes these first, as an uninterrupted run
    /// would have run them on.
    pub fn claim_resumable_after(
        &mut self,
        sweep_id: &str,
        owner: &str,
        lease: Duration,
        after: &HashMap<String, Vec<String>>,
    ) -> Result<Option<Claimed>, Error> {
        self.claim_where(sweep_id, owner, lease, after, RESUMABLE)
    }

    fn claim_where(
        &mut self,
        sweep_id: &str,
        owner: &str,
        lease: Duration,
        after: &HashMap<String, Vec<String>>,
        which: &str,
    ) -> Result<Option<Claimed>, Error> {
        let runnable = format!(
            "SELECT j.id FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
             WHERE s.sweep_id = ?1 AND {which} ORDER BY s.position LIMIT ?3 OFFSET ?4"
        );
        self.write(|tx| {
            let now = now_ms();
            let expires = now + lease.as_millis() as i64;
            if after.is_empty() && which == RUNNABLE {
                let next = match tx.is_postgres() {
                    true => format!("{NEXT_JOB} FOR UPDATE OF j SKIP LOCKED"),
                    false => NEXT_JOB.to_owned(),
                };
                let sql = format!("{CLAIM} WHERE id = ({next}) RETURNING id, config_json, attempts");
                let row = tx.query_opt(&sql, args![sweep_id, owner, now, expires, now_text()])?;
                return row.as_ref().map(claimed).transpose();
            }
            // Jobs that wait are few (a grid's longer `epochs` behind its
            // shorter ones), so the runnable ones are read a page at a time.
            // Each is taken only if it is still runnable when updated: on
            // PostgreSQL a second claimer's update waits for the first's
            // commit, then finds it running and moves on.
            let mut offset = 0;
            loop {
                let page: Vec<String> = tx
                    .query(&runnable, args![sweep_id, now, PAGE, offset])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect::<Result<_, _>>()?;
                for id in &page {
                    if waits(tx, after.get(id))? {
                        continue;
                    }
                    if let Some(row) = tx.query_opt(CLAIM_JOB, args![owner, now, expires, now_text(), id])? {
                        return claimed(&row).map(Some);
                    }
                }
                if (page.len() as i64) < PAGE {
                    return Ok(None);
                }
                offset += PAGE;
            }
        })
    }

    /// Claims job `job_id` for `owner` if it is runnable now (pending,
    /// interrupted, or running under an expired lease): the members of a
    /// group of fused heads, chosen by the caller. `None` when it is not
    /// (another runner took it first).
    pub fn claim_job(&mut self, job_id: &str, owner: &str, lease: Duration) -> Result<Option<Claimed>, Error> {
        self.write(|tx| {
            let now = now_ms();
            let row = tx.query_opt(CLAIM_JOB, args![owner, now, now + lease.as_millis() as i64, now_text(), job_id])?;
            row.as_ref().map(claimed).transpose()
        })
    }

    /// How many of the sweep's jobs [`Store::claim`] could hand out now:
    /// pending, interrupted, or running with an expired lease. A cheap check
    /// for a worker deciding whether a sweep has work for it.
    pub fn claimable(&self, sweep_id: &str) -> Result<usize, Error> {
        let n: i64 = self.read(|tx| {
            tx.value(
                "SELECT COUNT(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1
                   AND (j.status IN ('pending', 'interrupted') OR (j.status = 'running' AND j.lease_expires < ?2))",
                args![sweep_id, now_ms()],
            )
        })?;
        Ok(n as usize)
    }

    /// Extends a lease; [`Error::LeaseLost`] when `owner` no longer holds it.
    pub fn renew(&self, job_id: &str, owner: &str, lease: Duration) -> Result<(), Error> {
        let now = now_ms();
        let n = self.write(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_expires = ?3, heartbeat_at = ?4
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                args![job_id, owner, now + lease.as_millis() as i64, now],
            )
        })?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost { job_id: job_id.to_owned() })
        }
    }

    /// The running jobs of a sweep with their lease owners.
    pub fn leases(&self, sweep_id: &str) -> Result<Vec<(String, String)>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT j.id, j.lease_owner FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                 WHERE s.sweep_id = ?1 AND j.status = 'running' AND j.lease_owner IS NOT NULL",
                args![sweep_id],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Ends a lease held by a runner known to be dead, so the job can be claimed now.
    pub fn expire_lease(&self, job_id: &str, owner: &str) -> Result<bool, Error> {
        let n = self.write(|tx| {
            tx.exec(
                "UPDATE jobs SET lease_expires = 0 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                args![job_id, owner],
            )
        })?;
        Ok(n == 1)
    }

    /// Ends a job's run, releasing its lease, if `owner` still holds it.
    pub fn finish(&self, job_id: &str, owner: &str, how: Finish<'_>) -> Result<(), Error> {
        let (status, error) = match how {
            Finish::Done => ("done", None),
            Finish::Failed(e) => ("failed", Some(e)),
            Finish::Interrupted => ("interrupted", None),
        };
        let n = self.write(|tx| {
            let finished = (status == "done").then(now_text);
            tx.exec(
                "UPDATE jobs SET status = ?3, error = ?4, lease_owner = NULL, lease_expires = NULL,
                        finished_at = COALESCE(?5, finished_at)
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                args![job_id, owner, status, error, finished.as_ref()],
            )
        })?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost { job_id: job_id.to_owned() })
        }
    }

    /// Starts a job again from epoch 0: deletes its recorded epochs and
    /// checkpoints and makes it pending, in one transaction. Returns how many
    /// epochs were discarded, or `None` (nothing changed) while a runner
    /// holds the job.
    pub fn restart(&self, job_id: &str) -> Result<Option<usize>, Error> {
        let at = &self.path;
        self.write(|tx| {
            let status: Option<String> =
                tx.query_opt("SELECT status FROM jobs WHERE id = ?1", args![job_id])?.map(|r| r.get(0)).transpose()?;
            let Some(status) = status else {
                return Err(Error::NotFound(format!("{at}: no job `{job_id}`")));
            };
            if status == "running" {
                return Ok(None);
            }
            let epochs = tx.exec("DELETE FROM epochs WHERE job_id = ?1", args![job_id])?;
            tx.exec("DELETE FROM checkpoints WHERE job_id = ?1", args![job_id])?;
            tx.exec(
                "UPDATE jobs SET status = 'pending', lease_owner = NULL, lease_expires = NULL, heartbeat_at = NULL,
                   started_at = NULL, finished_at = NULL, error = NULL, best_valid_acc = NULL, best_epoch = NULL,
                   seconds = 0
                 WHERE id = ?1",
                args![job_id],
            )?;
            Ok(Some(epochs))
        })
    }

    /// Makes the sweep's failed jobs claimable again; returns how many.
    pub fn retry_failed(&self, sweep_id: &str) -> Result<usize, Error> {
        self.write(|tx| {
            tx.exec(
                "UPDATE jobs SET status = 'interrupted' WHERE status = 'failed'
                   AND id IN (SELECT job_id FROM sweep_jobs WHERE sweep_id = ?1)",
                args![sweep_id],
            )
        })
    }
}

fn claimed(r: &Row) -> Result<Claimed, Error> {
    Ok(Claimed { id: r.get(0)?, config_json: r.get(1)?, attempts: r.get(2)? })
}

/// Whether any of `before` is still to run, running, or waiting at an ASHA rung.
fn waits(tx: &mut Tx<'_, '_>, before: Option<&Vec<String>>) -> Result<bool, Error> {
    for id in before.into_iter().flatten() {
        let status: Option<String> =
            tx.query_opt("SELECT status FROM jobs WHERE id = ?1", args![id])?.map(|r| r.get(0)).transpose()?;
        if matches!(status.as_deref(), Some("pending" | "interrupted" | "running" | "waiting")) {
            return Ok(true);
        }
    }
    Ok(false)
}
