//! Opening a database: first the checks that refuse foreign, damaged or newer
//! files before anything could write to them (`inspect.rs`), then the
//! connection and its pragmas (migrating is in `migrations.rs`).

use std::path::Path;

use rusqlite::Connection;

use crate::busy::{retry, Patience};
use crate::error::classify;
use crate::inspect::{inspect, wal_path};
use crate::read_only::folder_accepts_files;
use crate::sql::Db;
use crate::{Error, Location, Migration, Store, MIGRATIONS};

impl Store {
    /// Opens (creating if needed) a sweep database and migrates it to the
    /// latest schema: an SQLite file (created with its folder) or a
    /// PostgreSQL database (which must exist; its tables are created). A
    /// database that is not a sweep database, is damaged, or comes from a
    /// newer sweep is refused and left untouched.
    pub fn open(db: impl Into<Location>) -> Result<Store, Error> {
        match db.into() {
            Location::Sqlite(path) => Store::open_with(&path, &MIGRATIONS),
            Location::Postgres(url) => Store::open_postgres(&url, &MIGRATIONS, false),
        }
    }

    /// [`Store::open`] with a given list of migrations (tests use a list
    /// that ends in a broken one).
    pub(crate) fn open_with(path: &Path, migrations: &[Migration]) -> Result<Store, Error> {
        let open = || {
            let latest = migrations.last().map_or(0, |m| m.version);
            inspect(path, latest, Patience::DEFAULT)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Open { path: path.into(), reason: format!("cannot create its folder: {e}") })?;
            }
            let conn = Connection::open(path).map_err(|e| Error::Open { path: path.into(), reason: e.to_string() })?;
            let store = Store::setup(conn, path, migrations)?;
            keep_reserve(path);
            Ok(store)
        };
        match open() {
            // SQLite's own words ("unable to open database file", "attempt to
            // write a readonly database") do not say why.
            Err(Error::Open { path: Location::Sqlite(path), reason })
                if path.exists() && !folder_accepts_files(&path) =>
            {
                let wal = wal_path(&path);
                let reason = format!(
                    "{reason} (its folder accepts no new file, and writing needs {} beside it)",
                    wal.file_name().unwrap_or_default().to_string_lossy()
                );
                Err(Error::Open { path: path.into(), reason })
            }
            other => other,
        }
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, Error> {
        let path = Path::new(":memory:");
        Store::setup(Connection::open_in_memory().map_err(|e| classify(path, e))?, path, &MIGRATIONS)
    }

    pub(crate) fn setup(conn: Connection, path: impl Into<Location>, migrations: &[Migration]) -> Result<Store, Error> {
        let path: Location = path.into();
        let patience = Patience::DEFAULT;
        conn.busy_timeout(patience.busy_timeout).map_err(|e| classify(&path, e))?;
        retry(&path, patience, || pragmas(&conn).map_err(|e| classify(&path, e)))?;
        let latest = migrations.last().map_or(0, |m| m.version);
        let store = Store { db: Db::Sqlite(conn), path, patience, read_only: false, schema: latest };
        store.migrate(migrations)?;
        Ok(store)
    }
}

/// The connection's settings. WAL lets readers (`sweep table`) run beside a
/// writer; FULL makes each commit durable, so a power loss never loses a
/// recorded epoch.
fn pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

/// Bytes kept beside an SQLite database, in its `-reserve` file, for the
/// writes that close a run when the disk fills: marking the running jobs
/// interrupted takes a few pages of WAL, and a write that failed for want
/// of room may have left none.
const RESERVE_BYTES: usize = 64 * 1024;

/// The file that keeps room beside the database at `db`.
pub(crate) fn reserve_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push("-reserve");
    db.with_file_name(name)
}

/// Makes sure the reserve is there, as far as the disk allows (a full disk
/// or a read-only folder leaves it smaller or absent: nothing else depends
/// on it).
fn keep_reserve(db: &Path) {
    let reserve = reserve_path(db);
    if std::fs::metadata(&reserve).is_ok_and(|m| m.len() >= RESERVE_BYTES as u64) {
        return;
    }
    if let Err(e) = std::fs::write(&reserve, vec![0u8; RESERVE_BYTES]) {
        tracing::debug!(path = %reserve.display(), error = %e, "no room kept beside the database");
    }
}

/// Frees the room kept beside the SQLite database at `db` (nothing for
/// PostgreSQL) when the disk is full, so that the writes that stop a run
/// cleanly fit; the next open keeps it again once there is room. Whether
/// there was any.
pub fn release_reserve(db: &Location) -> bool {
    match db {
        Location::Sqlite(path) => std::fs::remove_file(reserve_path(path)).is_ok(),
        Location::Postgres(_) => false,
    }
}
