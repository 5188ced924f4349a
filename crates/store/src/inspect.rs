//! The checks before a database is opened for writing, none of which writes a
//! byte: an SQLite header, a file as long as that header says (when that can
//! be told from the file alone), a sweep database's `application_id`, a schema
//! version this build knows, and SQLite's own `quick_check`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::busy::{retry, Patience};
use crate::error::classify;
use crate::read_only::{immutable_uri, Access};
use crate::{Error, APPLICATION_ID};

/// Checks that `path` is absent, empty, or an undamaged sweep database of at
/// most schema version `latest`.
///
/// SQLite's reading has the last word: `quick_check` through a read-only
/// connection, which sees the pages a WAL holds. The checks of the file before
/// it catch what that reading would not call damage (SQLite reads past the end
/// of a cut file as zeros), but only where the file alone can tell: see
/// [`check_length`]. A lock held by another connection is waited out
/// ([`retry`]), never taken for damage.
pub(crate) fn inspect(path: &Path, latest: i64, patience: Patience) -> Result<(), Error> {
    if read_header(path)?.is_none() {
        return Ok(());
    }
    check_length(path)?;
    retry(path, patience, || {
        let conn = reader(path, Access::Shared, patience)?;
        check_contents(&conn, path, latest).map(drop)
    })
}

/// A read-only connection to `path`.
pub(crate) fn reader(path: &Path, access: Access, patience: Patience) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match access {
        Access::Shared => Connection::open_with_flags(path, flags),
        Access::Immutable => Connection::open_with_flags(immutable_uri(path)?, flags | OpenFlags::SQLITE_OPEN_URI),
    }
    .map_err(|e| classify(path, e))?;
    conn.busy_timeout(patience.busy_timeout).map_err(|e| classify(path, e))?;
    Ok(conn)
}

/// What the first 100 bytes of a database file say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The file's length in bytes.
    pub(crate) len: u64,
    /// Bytes per page.
    pub(crate) page_size: u64,
    /// The page count the header promises, when it is valid (SQLite's rule:
    /// non-zero, and written with the change counter it carries).
    pub(crate) pages: Option<u64>,
}

/// Reads the header of `path`: `None` for a missing or empty file (a new
/// database); foreign or damaged when it is not an SQLite header.
pub(crate) fn read_header(path: &Path) -> Result<Option<Header>, Error> {
    let len = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(Error::Open { path: path.into(), reason: "is a folder".to_owned() }),
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Open { path: path.into(), reason: e.to_string() }),
    };
    if len == 0 {
        return Ok(None);
    }
    let mut header = [0u8; 100];
    let read = read_start(path, &mut header).map_err(|e| Error::Open { path: path.into(), reason: e.to_string() })?;
    if read < 16 || &header[..16] != b"SQLite format 3\0" {
        return Err(Error::Foreign { path: path.into(), reason: "not an SQLite database".to_owned() });
    }
    if read < 100 {
        return Err(Error::Corrupt { path: path.into(), reason: format!("truncated to {len} bytes") });
    }
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n => n as u64,
    };
    if page_size < 512 || !page_size.is_power_of_two() {
        return Err(Error::Corrupt { path: path.into(), reason: format!("bad page size {page_size}") });
    }
    // The page count is valid only when non-zero and written together with the
    // change counter (offset 24) it records as valid-for (offset 92).
    let pages = Some(be32(28) as u64).filter(|&n| n > 0 && be32(24) == be32(92));
    Ok(Some(Header { len, page_size, pages }))
}

/// Reads the first bytes of `path` into `buf`; returns how many there were.
///
/// The file is opened once per process and never closed (on Unix): POSIX
/// locks belong to the process, and closing *any* descriptor of a file drops
/// all of them, those of this process's SQLite connections included. A
/// connection that lost its shared lock on the main file lets another
/// process's closing connection believe itself the last one, checkpoint, and
/// delete the WAL from under it: that connection's later commits go to an
/// unlinked file (lost), and readers meanwhile see pages of two states
/// ("damaged"). A run opens the database once per job slot while the others
/// write, so every look at the file goes through a descriptor kept open.
#[cfg(unix)]
fn read_start(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::{Arc, Mutex};
    /// Each file by (device, inode), with the descriptor kept open for it.
    type Kept = Vec<((u64, u64), Arc<std::fs::File>)>;
    static KEPT: Mutex<Kept> = Mutex::new(Vec::new());
    let meta = std::fs::metadata(path)?;
    let id = (meta.dev(), meta.ino());
    let file = {
        let mut kept = KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.iter().find(|(k, _)| *k == id) {
            Some((_, file)) => file.clone(),
            None => {
                let file = Arc::new(std::fs::File::open(path)?);
                // Another file now has the name: keep it too (a few per process).
                kept.push((id, file.clone()));
                file
            }
        }
    };
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

/// Reads the first bytes of `path` into `buf`; returns how many there were.
#[cfg(not(unix))]
fn read_start(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut read = 0;
    while read < buf.len() {
        match file.read(&mut buf[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

/// Whether the main file alone is as long as its header promises, in whole
/// pages.
fn whole(header: &Header) -> bool {
    header.len.is_multiple_of(header.page_size)
        && header.pages.is_none_or(|pages| header.len >= pages * header.page_size)
}

/// How many times [`check_length`] looks at a file that is short with no WAL
/// beside it before calling it damaged.
const LOOKS: u32 = 5;

/// Refuses a main file shorter than the pages its header promises (or not a
/// whole number of pages), when that is what it is.
///
/// In WAL mode the main file lags behind the WAL until a checkpoint copies
/// pages back, and a checkpoint writes page 1 (with the page count) before the
/// pages it promises; a checkpoint cut short (a full disk) leaves it so until
/// the next. So while the `-wal` file holds anything, the main file alone
/// says nothing, and SQLite's reading, which sees the WAL, decides. Without
/// one (or with an empty one), a shortfall is damage if it lasts: it is looked
/// at again a few times, since a writer may be between page 1 and the rest, or
/// closing (its last checkpoint completes the file, then the WAL goes).
pub(crate) fn check_length(path: &Path) -> Result<(), Error> {
    let mut pause = Duration::from_millis(10);
    for look in 1..=LOOKS {
        let Some(header) = read_header(path)? else { return Ok(()) };
        if whole(&header) || wal_len(path) > 0 {
            return Ok(());
        }
        if look == LOOKS {
            let Header { len, page_size, pages } = header;
            let reason = match pages {
                Some(pages) => format!("truncated: {len} bytes, but its header promises {pages} pages of {page_size}"),
                None => format!("truncated: {len} bytes, not a whole number of {page_size}-byte pages"),
            };
            return Err(Error::Corrupt { path: path.into(), reason });
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    unreachable!("the last look returns")
}

/// The `-wal` file beside a database.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The length of the `-wal` file beside a database; 0 when there is none.
pub(crate) fn wal_len(path: &Path) -> u64 {
    std::fs::metadata(wal_path(path)).map_or(0, |m| m.len())
}

/// Checks, through a read-only connection, that the database is a sweep
/// database (or an empty one) of at most schema version `latest` and passes
/// `quick_check`; returns its schema version.
pub(crate) fn check_contents(conn: &Connection, path: &Path, latest: i64) -> Result<i64, Error> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
        let reason = if app_id == 0 {
            format!("an SQLite database with {tables} schema objects of another program")
        } else {
            format!("an SQLite database of another program (application_id {app_id:#x})")
        };
        return Err(Error::Foreign { path: path.into(), reason });
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if version > latest {
        return Err(Error::TooNew { path: path.into(), found: version, supported: latest });
    }
    // Damage inside the file (a torn write, bytes overwritten) is found here,
    // before opening for writing could touch it. quick_check reads every page
    // but skips the index-content checks of integrity_check.
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(3)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| classify(path, e))?;
    if problems.first().map(String::as_str) != Some("ok") {
        // The first problem comes after a line naming the schema ("*** in
        // database main ***"), in the same row.
        let problems: Vec<&str> = problems
            .iter()
            .flat_map(|p| p.lines())
            .filter(|line| !line.starts_with("***") && !line.trim().is_empty())
            .collect();
        let reason = format!("integrity check failed: {}", problems.join("; "));
        return Err(Error::Corrupt { path: path.into(), reason });
    }
    Ok(version)
}
