//! The store's one error type.

use std::time::Duration;

use crate::busy::is_busy;
use crate::Location;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a sweep database (another program's, or not SQLite).
    #[error("{path}: not a sweep database: {reason}")]
    Foreign {
        /// The database: its file, or its URL without the password.
        path: Location,
        /// Why it is not ours.
        reason: String,
    },
    /// The file is a damaged SQLite database.
    #[error("{path}: the database is damaged: {reason}")]
    Corrupt {
        /// The database: its file, or its URL without the password.
        path: Location,
        /// What is wrong.
        reason: String,
    },
    /// The database was written by a newer sweep.
    #[error(
        "{path}: written by a newer sweep (schema version {found}; this sweep knows up to {supported}): upgrade sweep"
    )]
    TooNew {
        /// The database: its file, or its URL without the password.
        path: Location,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The database could not be opened.
    #[error("{path}: cannot open: {reason}")]
    Open {
        /// The database: its file, or its URL without the password.
        path: Location,
        /// Why.
        reason: String,
    },
    /// A migration failed; the file keeps the schema it had.
    #[error("{path}: migration {name} failed, the database is unchanged: {reason}")]
    Migration {
        /// The database: its file, or its URL without the password.
        path: Location,
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
        /// The database: its file, or its URL without the password.
        path: Location,
        /// How long it waited.
        waited: Duration,
    },
    /// The disk (or the file system's quota) is full: SQLite could not write
    /// the transaction, which was rolled back whole. Nothing recorded is lost,
    /// and the same write succeeds once there is room.
    #[error("{path}: the disk is full")]
    Full {
        /// The database: its file, or its URL without the password.
        path: Location,
    },
    /// A store opened with [`Store::open_read_only`](crate::Store::open_read_only) was asked to write.
    #[error("{path}: opened for reading only, so it cannot be written")]
    ReadOnly {
        /// The database: its file, or its URL without the password.
        path: Location,
    },
    /// A sweep or job that is not in the database.
    #[error("{0}")]
    NotFound(String),
    /// Any other SQLite error on an open database.
    #[error("{path}: sqlite: {source}")]
    Sqlite {
        /// The database: its file, or its URL without the password.
        path: Location,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Any other PostgreSQL error: the server's, or the connection's.
    #[error("{path}: postgres: {reason}")]
    Postgres {
        /// The database's URL, without the password.
        path: Location,
        /// The server's or the client's message.
        reason: String,
    },
    /// A column held what the store did not write there.
    #[error("the database holds an unexpected value in column {column}: {found}")]
    Value {
        /// The column's position in the query.
        column: usize,
        /// What it held.
        found: String,
    },
}

/// Maps SQLite's errors on open to ours: busy (to be tried again), foreign,
/// damaged, or cannot open.
pub(crate) fn classify(path: impl Into<Location>, e: rusqlite::Error) -> Error {
    let path: Location = path.into();
    use rusqlite::ErrorCode;
    if is_busy(&e) {
        return Error::Busy { path: path.clone(), waited: Duration::ZERO };
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            Error::Foreign { path: path.clone(), reason: "not an SQLite database".to_owned() }
        }
        Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt { path: path.clone(), reason: e.to_string() },
        Some(ErrorCode::DiskFull) => Error::Full { path: path.clone() },
        _ => Error::Open { path: path.clone(), reason: e.to_string() },
    }
}

/// Maps SQLite's errors on an open database to ours: busy (to be tried
/// again), a full disk (SQLite's `SQLITE_FULL`, which its file layer returns
/// when a write fails with `ENOSPC`), or anything else.
pub(crate) fn sqlite(path: impl Into<Location>, e: rusqlite::Error) -> Error {
    let path: Location = path.into();
    if is_busy(&e) {
        return Error::Busy { path: path.clone(), waited: Duration::ZERO };
    }
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return Error::Full { path: path.clone() };
    }
    Error::Sqlite { path, source: e }
}

/// Maps PostgreSQL's errors to ours: a serialization failure, a deadlock or a
/// lock wait past `lock_timeout` to `Busy` (the whole transaction is tried
/// again, as SQLite's busy is), a full disk to `Full`, a write in a read-only
/// session to `ReadOnly`, anything else to `Postgres` with the server's words.
pub(crate) fn pg_error(path: &Location, e: postgres::Error) -> Error {
    use postgres::error::SqlState;
    let path = path.clone();
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            Error::Busy { path, waited: Duration::ZERO }
        }
        Some(c) if *c == SqlState::DISK_FULL => Error::Full { path },
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Error::ReadOnly { path },
        _ => {
            let reason = match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            };
            Error::Postgres { path, reason }
        }
    }
}
