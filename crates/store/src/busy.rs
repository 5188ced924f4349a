//! Waiting out another connection's lock: SQLite's busy timeout within one
//! statement, then whole attempts again, with pauses, for a bounded time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;

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
