//! Waiting out another connection's lock: SQLite's busy timeout within one
//! statement, then whole attempts again, with pauses, for a bounded time.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::sqlite;
use crate::{Error, Store};

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
pub(crate) fn retry<T>(
    path: &Path,
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
                    return Err(Error::Busy { path: path.to_owned(), waited });
                }
                if waited >= WARN_AFTER && warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        path = %path.display(),
                        waited_s = waited.as_secs(),
                        "the database is locked by another connection; waiting for it"
                    );
                    warned = Some(Instant::now());
                } else {
                    tracing::debug!(path = %path.display(), waited_ms = waited.as_millis() as u64, "database busy; again");
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
    /// Runs `f` on the connection, again while the database is busy.
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        retry(&self.path, self.patience, || f(&self.conn).map_err(|e| sqlite(&self.path, e)))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f`
    /// returns `Ok` and rolled back when anything fails; the whole of it again
    /// while the database is busy. Every write of the store goes through here;
    /// a read-only store refuses it.
    pub(crate) fn write<T>(&self, mut f: impl FnMut(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T, Error> {
        if self.read_only {
            return Err(Error::ReadOnly { path: self.path.clone() });
        }
        retry(&self.path, self.patience, || in_transaction(&self.conn, &mut f).map_err(|e| sqlite(&self.path, e)))
    }

    /// Sets how long this store waits for other connections' locks (tests
    /// make it short).
    #[cfg(test)]
    pub(crate) fn set_patience(&mut self, patience: Patience) -> Result<(), Error> {
        self.conn.busy_timeout(patience.busy_timeout).map_err(|e| sqlite(&self.path, e))?;
        self.patience = patience;
        Ok(())
    }
}

/// One attempt of [`Store::write`]: dropping the transaction on an error rolls it back.
fn in_transaction<T>(
    conn: &Connection,
    f: &mut impl FnMut(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    // The store's methods take no other transaction on its connection, so
    // this one is never nested.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}
