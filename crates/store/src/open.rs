//! Opening a database: the read-only inspection that refuses foreign, damaged
//! or newer files before anything could write to them, then the connection
//! and its pragmas (migrating is in `migrations.rs`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::classify;
use crate::{Error, Migration, Store, APPLICATION_ID, MIGRATIONS};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

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
