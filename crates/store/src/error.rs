//! The store's one error type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::busy::is_busy;

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
    /// Another connection held the database's lock for longer than the store
    /// waits (a minute per statement, then attempts again for minutes in all):
    /// nothing was written, and trying again later may succeed.
    #[error(
        "{path}: the database is locked by another connection (waited {:.1} s for it): try again",
        .waited.as_secs_f64()
    )]
    Busy {
        /// The database file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// The disk (or the file system's quota) is full: SQLite could not write
    /// the transaction, which was rolled back whole. Nothing recorded is lost,
    /// and the same write succeeds once there is room.
    #[error("{path}: the disk is full")]
    Full {
        /// The database file.
        path: PathBuf,
    },
    /// A store opened with [`Store::open_read_only`](crate::Store::open_read_only) was asked to write.
    #[error("{path}: opened for reading only, so it cannot be written")]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },
    /// A sweep or job that is not in the database.
    #[error("{0}")]
    NotFound(String),
    /// Any other SQLite error on an open database.
    #[error("{path}: sqlite: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// Maps SQLite's errors on open to ours: busy (to be tried again), foreign,
/// damaged, or cannot open.
pub(crate) fn classify(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    if is_busy(&e) {
        return Error::Busy { path: path.to_owned(), waited: Duration::ZERO };
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            Error::Foreign { path: path.to_owned(), reason: "not an SQLite database".to_owned() }
        }
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt { path: path.to_owned(), reason: e.to_string() },
        Some(ErrorCode::DiskFull) => Error::Full { path: path.to_owned() },
        _ => Error::Open { path: path.to_owned(), reason: e.to_string() },
    }
}

/// Maps SQLite's errors on an open database to ours: busy (to be tried
/// again), a full disk (SQLite's `SQLITE_FULL`, which its file layer returns
/// when a write fails with `ENOSPC`), or anything else.
pub(crate) fn sqlite(path: &Path, e: rusqlite::Error) -> Error {
    if is_busy(&e) {
        return Error::Busy { path: path.to_owned(), waited: Duration::ZERO };
    }
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return Error::Full { path: path.to_owned() };
    }
    Error::Sqlite { path: path.to_owned(), source: e }
}
