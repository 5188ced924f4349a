//! The SQLite store: sweeps, jobs, every epoch's metrics and the head
//! checkpoints, with embedded migrations and leases for claiming jobs.
//!
//! This is the only crate that uses rusqlite; it knows nothing of Candle.
//! Every write that must stay consistent (an epoch and its checkpoint, a
//! claim) is one `BEGIN IMMEDIATE` transaction, so a crash at any moment
//! leaves either all of it or none.
//!
//! [`Store`]'s methods are spread over the modules by concern: `open`
//! (connection, pragmas) after `inspect` (the checks before it), `read_only`
//! (opening for reading only), `migrations`, `lease` (claims and leases),
//! `write`, `read` and `prune` (what the pruner reads and decides); `rows` holds the values they take and return, `busy`
//! the waiting out of other connections' locks.

mod binding;
mod busy;
mod error;
mod inspect;
mod lease;
mod migrations;
mod open;
mod prune;
mod read;
mod read_only;
mod rows;
mod shards;
#[cfg(test)]
mod tests;
mod write;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use error::Error;
pub use migrations::{latest_version, Migration, MIGRATIONS};
pub use prune::{Metric, PruneRow};
pub use rows::{Claimed, EpochRow, FeatureRun, Finish, JobRow, NewJob, NewSweep, Registered, Status, SweepRow};
pub use shards::{FeatureShard, ShardCounts};

/// `PRAGMA application_id` of a sweep database ("SWPE").
pub const APPLICATION_ID: i32 = 0x5357_5045;

/// A connection to a sweep database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// How long it waits for other connections' locks.
    patience: busy::Patience,
    /// Opened by [`Store::open_read_only`]: every write is refused.
    read_only: bool,
    /// The file's schema version: the latest, but for a read-only store of an
    /// older file.
    schema: i64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, Error> {
        self.read(|conn| conn.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    /// SQLite's `PRAGMA data_version`: it changes when another connection
    /// commits to the database (this connection's own commits do not change
    /// it), so a reader can keep what it read until it does.
    pub fn data_version(&self) -> Result<i64, Error> {
        self.read(|conn| conn.query_row("PRAGMA data_version", [], |r| r.get(0)))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
