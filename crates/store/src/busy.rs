//! Waiting out another connection's lock: SQLite's busy timeout within one
//! statement, then whole attempts again, with pauses, for a bounded time.

use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{pg_error, sqlite};
use std::cell::RefCell;

use crate::sql::{off_runtime, Db, PgClient, Tx};
use crate::{Error, Location, Store};

/// How long a store waits for the locks other connections hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Patience {
    /// SQLite's busy timeout: how long one statement waits for a lock.
    pub(crate) busy_timeout: Duration,
    /// How long, in all, an operation is tried again while the database stays
    /// busy, before it fails with [`Error::Busy`].
    pub(crate) retry_for: Duration,
}

impl Patience {
    /// A minute per statement, five minutes in all: a writer blocked that
    /// long by another process is stuck, not queued.
    pub(crate) const DEFAULT: Patience =
        Patience { busy_timeout: Duration::from_secs(60), retry_for: Duration::from_secs(300) };
}

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// A wait is a warning once it has lasted this long (a busy timeout ran out,
/// or SQLite kept answering busy at once), then every [`WARN_EVERY`].
const WARN_AFTER: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Runs `attempt` until it ends otherwise than with [`Error::Busy`], again
/// after a pause while less than `patience.retry_for` has passed. An attempt
/// must be whole (one transaction, rolled back on its error), so running it
/// again is safe. The last `Busy` says how long it waited in all.
pub(crate) fn retry<T, P: Into<Location> + Copy>(
    path: P,
    patience: Patience,
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut warned: Option<Instant> = None;
    loop {
        match attempt() {
            Err(Error::Busy { .. }) => {
                let waited = start.elapsed();
                if waited >= patience.retry_for {
                    return Err(Error::Busy { path: path.into(), waited });
                }
                if waited >= WARN_AFTER && warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        path = %path.into(),
                        waited_s = waited.as_secs(),
                        "the database is locked by another connection; waiting for it"
                    );
                    warned = Some(Instant::now());
                } else {
                    tracing::debug!(path = %path.into(), waited_ms = waited.as_millis() as u64, "database busy; again");
                }
                std::thread::sleep(pause.min(patience.retry_for - waited));
                pause = (pause * 2).min(MAX_PAUSE);
            }
            other => return other,
        }
    }
}

/// Whether SQLite gave up waiting for another connection's lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl Store {
    /// Runs `f` on the connection, again while the database is busy. On
    /// SQLite each statement reads on its own; on PostgreSQL `f` runs in one
    /// transaction (read-only for a read-only store: its session refuses writes).
    pub(crate) fn read<T: Send>(
        &self,
        mut f: impl FnMut(&mut Tx<'_, '_>) -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        let at = &self.path;
        match &self.db {
            Db::Sqlite(conn) => retry(at, self.patience, || f(&mut Tx::Sqlite(conn, at))),
            Db::Postgres(client) => pg_transaction(client, at, self.patience, f),
        }
    }

    /// Runs `f` in one transaction (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's
    /// default, read committed, whose row locks the claim takes with `FOR
    /// UPDATE SKIP LOCKED`), committed when `f` returns `Ok` and rolled back
    /// when anything fails; the whole of it again while the database is busy.
    /// Every write of the store goes through here; a read-only store refuses it.
    pub(crate) fn write<T: Send>(
        &self,
        mut f: impl FnMut(&mut Tx<'_, '_>) -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        if self.read_only {
            return Err(Error::ReadOnly { path: self.path.clone() });
        }
        let at = &self.path;
        match &self.db {
            Db::Sqlite(conn) => retry(at, self.patience, || in_transaction(conn, at, &mut f)),
            Db::Postgres(client) => pg_transaction(client, at, self.patience, f),
        }
    }

    /// Sets how long this store waits for other connections' locks (tests
    /// make it short).
    #[cfg(test)]
    pub(crate) fn set_patience(&mut self, patience: Patience) -> Result<(), Error> {
        self.sqlite().busy_timeout(patience.busy_timeout).map_err(|e| sqlite(&self.path, e))?;
        self.patience = patience;
        Ok(())
    }
}

/// `f` in one PostgreSQL transaction, committed when it returns `Ok`, the
/// whole of it again while the server answers busy (a serialization failure,
/// a deadlock, a lock wait past `lock_timeout`); off the caller's thread.
fn pg_transaction<T: Send>(
    client: &RefCell<PgClient>,
    at: &Location,
    patience: Patience,
    mut f: impl FnMut(&mut Tx<'_, '_>) -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let mut client = client.borrow_mut();
    let client = client.get();
    off_runtime(|| {
        retry(at, patience, || {
            let mut tx = client.transaction().map_err(|e| pg_error(at, e))?;
            let out = f(&mut Tx::Postgres(&mut tx, at))?;
            tx.commit().map_err(|e| pg_error(at, e))?;
            Ok(out)
        })
    })
}

/// One attempt of [`Store::write`] on SQLite: a `BEGIN IMMEDIATE`
/// transaction, rolled back on any error.
fn in_transaction<T>(
    conn: &Connection,
    at: &Location,
    f: &mut impl FnMut(&mut Tx<'_, '_>) -> Result<T, Error>,
) -> Result<T, Error> {
    // The store's methods take no other transaction on its connection, so
    // this one is never nested. Dropping `tx` on an error rolls it back.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(|e| sqlite(at, e))?;
    let out = f(&mut Tx::Sqlite(&tx, at))?;
    tx.commit().map_err(|e| sqlite(at, e))?;
    Ok(out)
}
