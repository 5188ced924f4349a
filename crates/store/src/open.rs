//! Opening a database: first the checks that refuse foreign, damaged or newer
//! files before anything could write to them (`inspect.rs`), then the
//! connection and its pragmas (migrating is in `migrations.rs`).

use std::path::Path;

use rusqlite::Connection;

use crate::busy::{retry, Patience};
use crate::error::classify;
use crate::inspect::{inspect, wal_path};
use crate::read_only::folder_accepts_files;
use crate::{Error, Migration, Store, MIGRATIONS};

impl Store {
    /// Opens (creating if needed) a sweep database and migrates it to the
    /// latest schema. A file that is not a sweep database, is damaged, or
    /// comes from a newer sweep is refused and left untouched.
    pub fn open(path: &Path) -> Result<Store, Error> {
        Store::open_with(path, &MIGRATIONS)
    }

    /// [`Store::open`] with a given list of migrations (tests use a list
    /// that ends in a broken one).
    pub(crate) fn open_with(path: &Path, migrations: &[Migration]) -> Result<Store, Error> {
        let open = || {
            let latest = migrations.last().map_or(0, |m| m.version);
            inspect(path, latest, Patience::DEFAULT)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::Open {
                    path: path.to_owned(),
                    reason: format!("cannot create its folder: {e}"),
                })?;
            }
            let conn =
                Connection::open(path).map_err(|e| Error::Open { path: path.to_owned(), reason: e.to_string() })?;
            Store::setup(conn, path, migrations)
        };
        match open() {
            // SQLite's own words ("unable to open database file", "attempt to
            // write a readonly database") do not say why.
            Err(Error::Open { path, reason }) if path.exists() && !folder_accepts_files(&path) => {
                let wal = wal_path(&path);
                let reason = format!(
                    "{reason} (its folder accepts no new file, and writing needs {} beside it)",
                    wal.file_name().unwrap_or_default().to_string_lossy()
                );
                Err(Error::Open { path, reason })
            }
            other => other,
        }
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, Error> {
        let path = Path::new(":memory:");
        Store::setup(Connection::open_in_memory().map_err(|e| classify(path, e))?, path, &MIGRATIONS)
    }

    pub(crate) fn setup(conn: Connection, path: &Path, migrations: &[Migration]) -> Result<Store, Error> {
        let patience = Patience::DEFAULT;
        conn.busy_timeout(patience.busy_timeout).map_err(|e| classify(path, e))?;
        retry(path, patience, || pragmas(&conn).map_err(|e| classify(path, e)))?;
        let latest = migrations.last().map_or(0, |m| m.version);
        let store = Store { conn, path: path.to_owned(), patience, read_only: false, schema: latest };
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
