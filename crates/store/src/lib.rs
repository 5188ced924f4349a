//! The store: sweeps, jobs, every epoch's metrics and the head checkpoints,
//! with embedded migrations and leases for claiming jobs, in an SQLite file
//! or a PostgreSQL database ([`Location`]).
//!
//! This is the only crate that uses rusqlite or postgres; it knows nothing of
//! Candle, and its API is blocking (the postgres client runs its own small
//! runtime inside). Every write that must stay consistent (an epoch and its
//! checkpoint, a claim) is one transaction, so a crash at any moment leaves
//! either all of it or none.
//!
//! [`Store`]'s methods are spread over the modules by concern, each written
//! once for both backends through `sql` (parameters, rows, placeholders):
//! `open` (connection, pragmas) after `inspect` (the checks before it),
//! `read_only` (opening for reading only), `postgres` (connecting, the
//! version table, its migrations), `migrations`, `lease` (claims and leases),
//! `write`, `read`, `prune` (what the pruner reads and decides) and `shards`
//! (the backbone pass's shards); `rows` holds the values they take and return, `busy`
//! the waiting out of other connections' locks.

mod binding;
mod busy;
mod error;
mod inspect;
mod lease;
mod location;
mod migrations;
mod open;
mod postgres;
mod prune;
mod read;
mod read_only;
mod rows;
mod shards;
mod sql;
#[cfg(test)]
mod tests;
mod write;

use std::time::{SystemTime, UNIX_EPOCH};

use sql::Db;

pub use binding::{ManifestJson, MANIFEST_PART};
pub use error::Error;
pub use location::{BadLocation, Location, PgUrl};
pub use migrations::{latest_version, Migration, MIGRATIONS};
pub use open::release_reserve;
pub use prune::{Metric, PruneRow};
pub use rows::{Claimed, EpochRow, FeatureRun, Finish, JobRow, NewJob, NewSweep, Registered, Status, SweepRow};
pub use shards::{FeatureShard, ShardCounts};
pub use write::EpochRecord;

/// `PRAGMA application_id` of a sweep database ("SWPE").
pub const APPLICATION_ID: i32 = 0x5357_5045;

/// A connection to a sweep database.
pub struct Store {
    db: Db,
    /// Where the database is (named by every error about it).
    path: Location,
    /// How long it waits for other connections' locks.
    patience: busy::Patience,
    /// Opened by [`Store::open_read_only`]: every write is refused.
    read_only: bool,
    /// The file's schema version: the latest, but for a read-only store of an
    /// older file.
    schema: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.path)
            .field("read_only", &self.read_only)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Now as the store writes times: UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ` (SQLite's
/// `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`, which the schema's defaults use),
/// made here so both backends write the same text.
fn now_text() -> String {
    let ms = now_ms();
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

impl Store {
    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, Error> {
        self.read(|tx| match tx.is_postgres() {
            true => tx.value("SELECT version FROM sweep_schema", &[]),
            false => tx.value("PRAGMA user_version", &[]),
        })
    }

    /// A number that changes when another connection commits to the
    /// database, so a reader can keep what it read until it does: SQLite's
    /// `PRAGMA data_version` (this connection's own commits do not change
    /// it); on PostgreSQL a hash of the server's current snapshot (which
    /// changes whenever any transaction that wrote ends; more often than
    /// needed, never less).
    pub fn data_version(&self) -> Result<i64, Error> {
        self.read(|tx| match tx.is_postgres() {
            true => {
                let snapshot: String = tx.value("SELECT txid_current_snapshot()::text", &[])?;
                // FNV-1a: a stable hash of the text.
                let hash = snapshot
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
                Ok(hash as i64)
            }
            false => tx.value("PRAGMA data_version", &[]),
        })
    }

    /// Where the database is.
    pub fn location(&self) -> &Location {
        &self.path
    }

    /// The SQLite connection (tests reach past the store with it).
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &rusqlite::Connection {
        match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(_) => panic!("not an SQLite store"),
        }
    }
}
