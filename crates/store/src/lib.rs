//! The SQLite store: sweeps, jobs, every epoch's metrics and the head
//! checkpoints, with embedded migrations and leases for claiming jobs.
//!
//! This is the only crate that uses rusqlite; it knows nothing of Candle.
//! Every write that must stay consistent (an epoch and its checkpoint, a
//! claim) is one `BEGIN IMMEDIATE` transaction, so a crash at any moment
//! leaves either all of it or none.

mod migrations;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

pub use migrations::{latest_version, Migration, MIGRATIONS};

/// `PRAGMA application_id` of a sweep database ("SWPE").
pub const APPLICATION_ID: i32 = 0x5357_5045;

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a sweep database (another program's, or not SQLite).
    #[error("{path}: not a sweep database: {reason}")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// Why it is not ours.
        reason: String,
    },
    /// The file is a damaged SQLite database.
    #[error("{path}: the database is damaged: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database was written by a newer sweep.
    #[error(
        "{path}: written by a newer sweep (schema version {found}; this sweep knows up to {supported}): upgrade sweep"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The database could not be opened.
    #[error("{path}: cannot open: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A migration failed; the file keeps the schema it had.
    #[error("{path}: migration {name} failed, the database is unchanged: {reason}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's folder name.
        name: String,
        /// SQLite's message.
        reason: String,
    },
    /// The job's lease was taken over by another runner.
    #[error("job {job_id}: lease lost to another runner")]
    LeaseLost {
        /// The job.
        job_id: String,
    },
    /// A sweep or job that is not in the database.
    #[error("{0}")]
    NotFound(String),
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Not started.
    Pending,
    /// Claimed by a runner holding its lease.
    Running,
    /// Every epoch finished.
    Done,
    /// Stopped by an error, recorded in `error`.
    Failed,
    /// Stopped by the user; resumable.
    Interrupted,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 5] = [Status::Pending, Status::Running, Status::Done, Status::Failed, Status::Interrupted];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Status {
        Status::ALL.into_iter().find(|st| st.as_str() == s).unwrap_or(Status::Failed)
    }
}

/// A sweep to register.
#[derive(Debug, Clone)]
pub struct NewSweep<'a> {
    /// The sweep's id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its canonical JSON.
    pub spec_json: &'a str,
    /// The file as submitted.
    pub source: Option<&'a str>,
    /// Where it was submitted from.
    pub source_path: Option<&'a str>,
}

/// A job to register.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The job's id.
    pub id: &'a str,
    /// Resolved train settings as JSON.
    pub config_json: &'a str,
    /// Batch size.
    pub batch_size: i64,
    /// Decode threads.
    pub workers: i64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Epochs.
    pub epochs: i64,
}

/// What registering a sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Whether the sweep itself was new.
    pub new_sweep: bool,
    /// Jobs added to the database.
    pub new_jobs: usize,
    /// Jobs the database already had (from this or another sweep).
    pub known_jobs: usize,
}

/// A sweep as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Canonical JSON.
    pub spec_json: String,
    /// The file as submitted.
    pub source: Option<String>,
    /// Where it was submitted from.
    pub source_path: Option<String>,
    /// When it was first submitted (UTC).
    pub created_at: String,
    /// Whether its last run found the features cached.
    pub features_reused: Option<bool>,
    /// The feature-cache key of its last run.
    pub features_key: Option<String>,
    /// Job counts by status.
    pub counts: Vec<(Status, usize)>,
}

/// A job as stored, with its place in a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// Resolved train settings as JSON.
    pub config_json: String,
    /// Batch size.
    pub batch_size: i64,
    /// Decode threads.
    pub workers: i64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Epochs.
    pub epochs: i64,
    /// Status.
    pub status: Status,
    /// Times claimed.
    pub attempts: i64,
    /// The error of a failed job.
    pub error: Option<String>,
    /// Best validation accuracy so far.
    pub best_valid_acc: Option<f64>,
    /// Its 1-based epoch.
    pub best_epoch: Option<i64>,
    /// Training accuracy of the last recorded epoch.
    pub final_train_acc: Option<f64>,
    /// Epochs recorded.
    pub epochs_done: i64,
    /// Training seconds, summed over epochs.
    pub seconds: f64,
}

/// One epoch's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: i64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_acc: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Validation accuracy.
    pub valid_acc: f64,
    /// Learning rate.
    pub lr: f64,
    /// Seconds.
    pub seconds: f64,
}

/// A job handed to a runner by [`Store::claim`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The job's id.
    pub id: String,
    /// Resolved train settings as JSON.
    pub config_json: String,
    /// Times claimed, this one included.
    pub attempts: i64,
}

/// One feature pass of a sweep's run, as recorded by [`Store::record_feature_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRun {
    /// Row id, increasing in recording order.
    pub id: i64,
    /// The sweep whose run it was.
    pub sweep_id: String,
    /// The feature-cache key.
    pub cache_key: String,
    /// Whether the features came from the cache (no backbone pass).
    pub reused: bool,
    /// Images the features cover.
    pub images: i64,
    /// Seconds the pass (or the cache read) took, when timed.
    pub seconds: Option<f64>,
    /// When it was recorded (UTC).
    pub recorded_at: String,
}

/// How a job ended for its runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish<'a> {
    /// All epochs recorded.
    Done,
    /// Failed with this error.
    Failed(&'a str),
    /// Stopped by the user.
    Interrupted,
}

/// A connection to a sweep database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) a sweep database and migrates it to the
    /// latest schema. A file that is not a sweep database, is damaged, or
    /// comes from a newer sweep is refused and left untouched.
    pub fn open(path: &Path) -> Result<Store, Error> {
        Store::open_with(path, &MIGRATIONS)
    }

    /// [`Store::open`] with a given list of migrations (tests use a list
    /// that ends in a broken one).
    fn open_with(path: &Path, migrations: &[Migration]) -> Result<Store, Error> {
        let latest = migrations.last().map_or(0, |m| m.version);
        inspect(path, latest)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Open { path: path.to_owned(), reason: format!("cannot create its folder: {e}") })?;
        }
        let conn = Connection::open(path).map_err(|e| Error::Open { path: path.to_owned(), reason: e.to_string() })?;
        Store::setup(conn, path, migrations)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, Error> {
        Store::setup(Connection::open_in_memory()?, Path::new(":memory:"), &MIGRATIONS)
    }

    fn setup(conn: Connection, path: &Path, migrations: &[Migration]) -> Result<Store, Error> {
        let corrupt = |e: rusqlite::Error| classify(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        // WAL lets readers (`sweep table`) run beside a writer; FULL makes each
        // commit durable, so a power loss never loses a recorded epoch.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(corrupt)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(corrupt)?;
        let mut store = Store { conn, path: path.to_owned() };
        store.migrate(migrations)?;
        Ok(store)
    }

    /// Applies every migration past the file's version in one transaction:
    /// the file ends at the latest version or, when one fails, at the one it had.
    fn migrate(&mut self, migrations: &[Migration]) -> Result<(), Error> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| classify(&path, e))?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(&path, e))?;
        let latest = migrations.last().map_or(0, |m| m.version);
        if version > latest {
            return Err(Error::TooNew { path, found: version, supported: latest });
        }
        for m in migrations.iter().filter(|m| m.version > version) {
            tracing::info!(version = m.version, name = m.name, "applying migration");
            // Dropping `tx` on the error rolls back every migration of this open.
            tx.execute_batch(m.up).map_err(|e| Error::Migration {
                path: path.clone(),
                name: m.name.to_owned(),
                reason: e.to_string(),
            })?;
        }
        if version < latest {
            tx.pragma_update(None, "user_version", latest)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, Error> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a sweep and its jobs, idempotently: a known sweep or job is kept
    /// as it is, with everything recorded for it.
    pub fn register_sweep(&mut self, sweep: &NewSweep<'_>, jobs: &[NewJob<'_>]) -> Result<Registered, Error> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new_sweep = tx.execute(
            "INSERT OR IGNORE INTO sweeps (id, name, spec_json, source, source_path) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sweep.id, sweep.name, sweep.spec_json, sweep.source, sweep.source_path],
        )? == 1;
        let mut new_jobs = 0;
        {
            let mut insert_job = tx.prepare(
                "INSERT OR IGNORE INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut link =
                tx.prepare("INSERT OR IGNORE INTO sweep_jobs (sweep_id, job_id, position) VALUES (?1, ?2, ?3)")?;
            for (position, job) in jobs.iter().enumerate() {
                new_jobs += insert_job.execute(params![
                    job.id,
                    job.config_json,
                    job.batch_size,
                    job.workers,
                    job.lr,
                    job.momentum,
                    job.epochs
                ])?;
                link.execute(params![sweep.id, job.id, position as i64])?;
            }
        }
        tx.commit()?;
        Ok(Registered { new_sweep, new_jobs, known_jobs: jobs.len() - new_jobs })
    }

    /// Records what the sweep's latest run did about features and the split.
    pub fn set_features(&self, sweep_id: &str, key: &str, reused: bool, split_json: &str) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE sweeps SET features_key = ?2, features_reused = ?3, split_json = ?4 WHERE id = ?1",
            params![sweep_id, key, reused, split_json],
        )?;
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
        let id = self.conn.query_row(
            "INSERT INTO feature_runs (sweep_id, cache_key, reused, images, seconds) VALUES (?1, ?2, ?3, ?4, ?5)
             RETURNING id",
            params![sweep_id, key, reused, images, seconds],
            |r| r.get(0),
        )?;
        Ok(id)
    }

    /// Every feature pass recorded for a sweep, oldest first.
    pub fn feature_runs(&self, sweep_id: &str) -> Result<Vec<FeatureRun>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT id, sweep_id, cache_key, reused, images, seconds, recorded_at
             FROM feature_runs WHERE sweep_id = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([sweep_id], |r| {
                Ok(FeatureRun {
                    id: r.get(0)?,
                    sweep_id: r.get(1)?,
                    cache_key: r.get(2)?,
                    reused: r.get(3)?,
                    images: r.get(4)?,
                    seconds: r.get(5)?,
                    recorded_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// A sweep by id, id prefix or name (the latest of that name); without
    /// one, the latest sweep.
    pub fn find_sweep(&self, which: Option<&str>) -> Result<SweepRow, Error> {
        let id: Option<String> = match which {
            None => self
                .conn
                .query_row("SELECT id FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1", [], |r| r.get(0))
                .optional()?,
            Some(w) => self
                .conn
                .query_row(
                    "SELECT id FROM sweeps WHERE id = ?1 OR name = ?1 OR (length(?1) >= 4 AND id LIKE ?1 || '%')
                     ORDER BY (id = ?1) DESC, created_at DESC, rowid DESC LIMIT 1",
                    [w],
                    |r| r.get(0),
                )
                .optional()?,
        };
        let id = id.ok_or_else(|| match which {
            None => {
                Error::NotFound(format!("{}: no sweeps yet (submit one with `sweep run FILE`)", self.path.display()))
            }
            Some(w) => Error::NotFound(format!("{}: no sweep named or with id `{w}`", self.path.display())),
        })?;
        self.sweep(&id)
    }

    fn sweep(&self, id: &str) -> Result<SweepRow, Error> {
        let mut row = self.conn.query_row(
            "SELECT id, name, spec_json, source, source_path, created_at, features_reused, features_key FROM sweeps WHERE id = ?1",
            [id],
            |r| {
                Ok(SweepRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    spec_json: r.get(2)?,
                    source: r.get(3)?,
                    source_path: r.get(4)?,
                    created_at: r.get(5)?,
                    features_reused: r.get(6)?,
                    features_key: r.get(7)?,
                    counts: Vec::new(),
                })
            },
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT j.status, count(*) FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id WHERE s.sweep_id = ?1 GROUP BY j.status",
        )?;
        let mut counts: Vec<(Status, usize)> = stmt
            .query_map([id], |r| Ok((Status::parse(&r.get::<_, String>(0)?), r.get::<_, i64>(1)? as usize)))?
            .collect::<Result<_, _>>()?;
        counts.sort();
        row.counts = counts;
        Ok(row)
    }

    /// Every sweep, oldest first, with job counts.
    pub fn sweeps(&self) -> Result<Vec<SweepRow>, Error> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM sweeps ORDER BY created_at, rowid")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.iter().map(|id| self.sweep(id)).collect()
    }

    /// The jobs of a sweep, in expansion order.
    pub fn jobs(&self, sweep_id: &str) -> Result<Vec<JobRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT j.id, j.config_json, j.batch_size, j.workers, j.lr, j.momentum, j.epochs, j.status, j.attempts,
                    j.error, j.best_valid_acc, j.best_epoch,
                    (SELECT e.train_acc FROM epochs e WHERE e.job_id = j.id ORDER BY e.epoch DESC LIMIT 1),
                    (SELECT count(*) FROM epochs e WHERE e.job_id = j.id),
                    j.seconds
             FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
             WHERE s.sweep_id = ?1 ORDER BY s.position",
        )?;
        let rows = stmt
            .query_map([sweep_id], |r| {
                Ok(JobRow {
                    id: r.get(0)?,
                    config_json: r.get(1)?,
                    batch_size: r.get(2)?,
                    workers: r.get(3)?,
                    lr: r.get(4)?,
                    momentum: r.get(5)?,
                    epochs: r.get(6)?,
                    status: Status::parse(&r.get::<_, String>(7)?),
                    attempts: r.get(8)?,
                    error: r.get(9)?,
                    best_valid_acc: r.get(10)?,
                    best_epoch: r.get(11)?,
                    final_train_acc: r.get(12)?,
                    epochs_done: r.get(13)?,
                    seconds: r.get(14)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The full id of a job from its id or a unique prefix of at least 4 characters.
    pub fn resolve_job(&self, id: &str) -> Result<String, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM jobs WHERE id = ?1 OR (length(?1) >= 4 AND id LIKE ?1 || '%') LIMIT 2")?;
        let ids: Vec<String> = stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotFound(format!("{}: no job `{id}`", self.path.display()))),
            _ => {
                Err(Error::NotFound(format!("{}: `{id}` names several jobs: give more of the id", self.path.display())))
            }
        }
    }

    /// Every recorded epoch of a job, in order.
    pub fn epochs(&self, job_id: &str) -> Result<Vec<EpochRow>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds FROM epochs WHERE job_id = ?1 ORDER BY epoch",
        )?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok(EpochRow {
                    epoch: r.get(0)?,
                    train_loss: r.get(1)?,
                    train_acc: r.get(2)?,
                    valid_loss: r.get(3)?,
                    valid_acc: r.get(4)?,
                    lr: r.get(5)?,
                    seconds: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Atomically claims the sweep's next runnable job (pending, interrupted,
    /// or running with an expired lease) for `owner`, leased for `lease`.
    pub fn claim(&mut self, sweep_id: &str, owner: &str, lease: Duration) -> Result<Option<Claimed>, Error> {
        let now = now_ms();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = tx
            .query_row(
                "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires = ?3 + ?4, heartbeat_at = ?3,
                        attempts = attempts + 1, error = NULL,
                        started_at = COALESCE(started_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                 WHERE id = (
                     SELECT j.id FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
                     WHERE s.sweep_id = ?1
                       AND (j.status IN ('pending', 'interrupted') OR (j.status = 'running' AND j.lease_expires < ?3))
                     ORDER BY s.position LIMIT 1)
                 RETURNING id, config_json, attempts",
                params![sweep_id, owner, now, lease.as_millis() as i64],
                |r| Ok(Claimed { id: r.get(0)?, config_json: r.get(1)?, attempts: r.get(2)? }),
            )
            .optional()?;
        tx.commit()?;
        Ok(claimed)
    }

    /// Extends a lease; [`Error::LeaseLost`] when `owner` no longer holds it.
    pub fn renew(&self, job_id: &str, owner: &str, lease: Duration) -> Result<(), Error> {
        let now = now_ms();
        let n = self.conn.execute(
            "UPDATE jobs SET lease_expires = ?3 + ?4, heartbeat_at = ?3 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            params![job_id, owner, now, lease.as_millis() as i64],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost { job_id: job_id.to_owned() })
        }
    }

    /// The running jobs of a sweep with their lease owners.
    pub fn leases(&self, sweep_id: &str) -> Result<Vec<(String, String)>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT j.id, j.lease_owner FROM sweep_jobs s JOIN jobs j ON j.id = s.job_id
             WHERE s.sweep_id = ?1 AND j.status = 'running' AND j.lease_owner IS NOT NULL",
        )?;
        let rows = stmt.query_map([sweep_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Ends a lease held by a runner known to be dead, so the job can be claimed now.
    pub fn expire_lease(&self, job_id: &str, owner: &str) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE jobs SET lease_expires = 0 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            params![job_id, owner],
        )?;
        Ok(n == 1)
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
        let now = now_ms();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = tx.execute(
            "UPDATE jobs SET lease_expires = ?3 + ?4, heartbeat_at = ?3, seconds = seconds + ?5
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            params![job_id, owner, now, lease.as_millis() as i64, epoch.seconds],
        )?;
        if held != 1 {
            return Err(Error::LeaseLost { job_id: job_id.to_owned() });
        }
        tx.execute(
            "INSERT INTO epochs (job_id, epoch, train_loss, train_acc, valid_loss, valid_acc, lr, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                job_id,
                epoch.epoch,
                epoch.train_loss,
                epoch.train_acc,
                epoch.valid_loss,
                epoch.valid_acc,
                epoch.lr,
                epoch.seconds
            ],
        )?;
        tx.execute(
            "INSERT INTO checkpoints (job_id, kind, epoch, state) VALUES (?1, 'last', ?2, ?3)
             ON CONFLICT (job_id, kind) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
            params![job_id, epoch.epoch, state],
        )?;
        if is_best {
            tx.execute(
                "INSERT INTO checkpoints (job_id, kind, epoch, state) VALUES (?1, 'best', ?2, ?3)
                 ON CONFLICT (job_id, kind) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
                params![job_id, epoch.epoch, state],
            )?;
            tx.execute(
                "UPDATE jobs SET best_valid_acc = ?2, best_epoch = ?3 WHERE id = ?1",
                params![job_id, epoch.valid_acc, epoch.epoch],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest checkpoint of `kind` (`last` or `best`): its epoch and bytes.
    pub fn checkpoint(&self, job_id: &str, kind: &str) -> Result<Option<(i64, Vec<u8>)>, Error> {
        Ok(self
            .conn
            .query_row("SELECT epoch, state FROM checkpoints WHERE job_id = ?1 AND kind = ?2", [job_id, kind], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Ends a job's run, releasing its lease, if `owner` still holds it.
    pub fn finish(&self, job_id: &str, owner: &str, how: Finish<'_>) -> Result<(), Error> {
        let (status, error) = match how {
            Finish::Done => ("done", None),
            Finish::Failed(e) => ("failed", Some(e)),
            Finish::Interrupted => ("interrupted", None),
        };
        let n = self.conn.execute(
            "UPDATE jobs SET status = ?3, error = ?4, lease_owner = NULL, lease_expires = NULL,
                    finished_at = CASE WHEN ?3 = 'done' THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ELSE finished_at END
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            params![job_id, owner, status, error],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost { job_id: job_id.to_owned() })
        }
    }

    /// Makes the sweep's failed jobs claimable again; returns how many.
    pub fn retry_failed(&self, sweep_id: &str) -> Result<usize, Error> {
        Ok(self.conn.execute(
            "UPDATE jobs SET status = 'interrupted' WHERE status = 'failed'
               AND id IN (SELECT job_id FROM sweep_jobs WHERE sweep_id = ?1)",
            [sweep_id],
        )?)
    }
}

/// Checks, without writing a byte, that `path` is absent, empty, or an
/// undamaged sweep database of at most schema version `latest`.
fn inspect(path: &Path, latest: i64) -> Result<(), Error> {
    use std::io::Read;
    let len = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::Open { path: path.to_owned(), reason: "is a folder".to_owned() })
        }
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Open { path: path.to_owned(), reason: e.to_string() }),
    };
    if len == 0 {
        return Ok(());
    }
    let mut header = [0u8; 100];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut header))
        .map_err(|e| Error::Open { path: path.to_owned(), reason: e.to_string() })?;
    if read < 16 || &header[..16] != b"SQLite format 3\0" {
        return Err(Error::Foreign { path: path.to_owned(), reason: "not an SQLite database".to_owned() });
    }
    if read < 100 {
        return Err(Error::Corrupt { path: path.to_owned(), reason: format!("truncated to {len} bytes") });
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n => n as u64,
    };
    let pages = u32::from_be_bytes([header[28], header[29], header[30], header[31]]) as u64;
    if page_size < 512 || !page_size.is_power_of_two() {
        return Err(Error::Corrupt { path: path.to_owned(), reason: format!("bad page size {page_size}") });
    }
    if len % page_size != 0 || len < pages * page_size {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!("truncated: {len} bytes, but its header promises {pages} pages of {page_size}"),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| Error::Open { path: path.to_owned(), reason: e.to_string() })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(path, e))?;
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
        let reason = if app_id == 0 {
            format!("an SQLite database with {tables} schema objects of another program")
        } else {
            format!("an SQLite database of another program (application_id {app_id:#x})")
        };
        return Err(Error::Foreign { path: path.to_owned(), reason });
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if version > latest {
        return Err(Error::TooNew { path: path.to_owned(), found: version, supported: latest });
    }
    // Damage inside the file (a torn write, bytes overwritten) is found here,
    // before opening for writing could touch it. quick_check reads every page
    // but skips the index-content checks of integrity_check.
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(3)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| classify(path, e))?;
    if problems.first().map(String::as_str) != Some("ok") {
        // The first line names the schema ("*** in database main ***"), not a problem.
        let problems: Vec<&str> = problems.iter().map(String::as_str).filter(|p| !p.starts_with("***")).collect();
        let reason = format!("integrity check failed: {}", problems.join("; "));
        return Err(Error::Corrupt { path: path.to_owned(), reason });
    }
    Ok(())
}

/// Maps SQLite's errors on open to ours.
fn classify(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            Error::Foreign { path: path.to_owned(), reason: "not an SQLite database".to_owned() }
        }
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt { path: path.to_owned(), reason: e.to_string() },
        _ => Error::Open { path: path.to_owned(), reason: e.to_string() },
    }
}
