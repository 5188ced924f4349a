//! Opening a database for reading only (`sweep status`, `table`, `export`):
//! nothing created, migrated or written, and a way in where SQLite cannot
//! create the `-shm` file a WAL database is read through (a read-only folder
//! or file system).

use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

use crate::busy::{retry, Patience};
use crate::error::classify;
use crate::inspect::{check_contents, check_length, read_header, reader, wal_len, wal_path};
use crate::sql::Db;
use crate::{latest_version, Error, Location, Store, MIGRATIONS};

impl Store {
    /// Opens a sweep database for reading only: nothing is created, migrated
    /// or written, and every write method returns [`Error::ReadOnly`].
    ///
    /// - A missing or empty file reads as an empty database (no sweeps), and
    ///   stays missing or empty.
    /// - A foreign, damaged or newer file is refused, as by [`Store::open`].
    /// - An older schema is read as it is, without migrating: what it lacks
    ///   reads as empty (a schema-1 file has no feature passes, and had none).
    /// - Where SQLite cannot create the `-shm` file beside the database (its
    ///   folder accepts no new file: read-only permissions or file system),
    ///   the file is read as `immutable` (no locks, no `-shm`) when no `-wal`
    ///   file holds writes; nobody can be writing it there. When one does,
    ///   and no `-shm` is there to read it through, the file is refused: it
    ///   reads whole once a command that writes has opened it.
    ///
    /// On PostgreSQL the session is read-only (`default_transaction_read_only`),
    /// so the server refuses a write too; an empty database reads as empty.
    pub fn open_read_only(db: impl Into<Location>) -> Result<Store, Error> {
        match db.into() {
            Location::Sqlite(path) => Store::open_read_only_with(&path, folder_accepts_files),
            Location::Postgres(url) => Store::open_postgres(&url, &MIGRATIONS, true),
        }
    }

    /// [`Store::open_read_only`] with the answer to "does the folder accept
    /// new files?" given (tests run as root, whom permissions do not stop).
    pub(crate) fn open_read_only_with(
        path: &Path,
        folder_accepts_files: impl Fn(&Path) -> bool,
    ) -> Result<Store, Error> {
        let patience = Patience::DEFAULT;
        if read_header(path)?.is_none() {
            return Store::empty_read_only(path);
        }
        check_length(path)?;
        let access = read_access(path, folder_accepts_files(path), Beside::of(path))?;
        let (conn, schema) = retry(path, patience, || {
            let conn = reader(path, access, patience)?;
            let schema = check_contents(&conn, path, latest_version())?;
            Ok((conn, schema))
        })?;
        if schema == 0 {
            // An SQLite file with nothing in it: nothing recorded yet.
            return Store::empty_read_only(path);
        }
        Ok(Store { db: Db::Sqlite(conn), path: path.into(), patience, read_only: true, schema })
    }

    /// A read-only store of `path` that holds nothing: an empty database in
    /// memory, at the latest schema.
    pub(crate) fn empty_read_only(path: impl Into<Location>) -> Result<Store, Error> {
        let path: Location = path.into();
        let conn = Connection::open_in_memory().map_err(|e| classify(&path, e))?;
        let mut store = Store::setup(conn, path, &MIGRATIONS)?;
        store.read_only = true;
        Ok(store)
    }
}

/// How a reader reaches a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// As any SQLite reader: beside writers, through the WAL and its `-shm`.
    Shared,
    /// `immutable=1`: no locks, no `-shm`, no WAL. Right only for a file that
    /// nobody can be writing, and whose WAL holds nothing.
    Immutable,
}

/// What lies beside a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Beside {
    /// Bytes in its `-wal` file (0 when there is none).
    pub(crate) wal_len: u64,
    /// Whether its `-shm` file exists.
    pub(crate) shm: bool,
}

impl Beside {
    fn of(path: &Path) -> Beside {
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        Beside { wal_len: wal_len(path), shm: Path::new(&shm).exists() }
    }
}

/// How to read `path`, given whether its folder accepts new files (SQLite
/// reads a WAL database through a `-wal` and a `-shm` file, creating them if
/// need be) and what lies beside it.
pub(crate) fn read_access(path: &Path, folder_accepts_files: bool, beside: Beside) -> Result<Access, Error> {
    if folder_accepts_files {
        return Ok(Access::Shared);
    }
    if beside.wal_len == 0 {
        // Nobody can write a WAL database where no -wal can be created, and an
        // empty one holds nothing to read.
        return Ok(Access::Immutable);
    }
    if beside.shm {
        // SQLite reads the WAL through an existing -shm, even read-only.
        return Ok(Access::Shared);
    }
    Err(Error::Open {
        path: path.into(),
        reason: format!(
            "{} holds writes not yet in the database, and reading them needs a -shm file that this read-only \
             folder cannot take: run a command that writes (such as `sweep run`) on it where it can be written",
            wal_path(path).display()
        ),
    })
}

/// Whether a new file can be created in the folder of `path` (as SQLite
/// creates `-wal` and `-shm` files): tried with a probe file, removed at once.
/// Permission bits alone do not say (root ignores them; a read-only mount
/// overrides them).
pub(crate) fn folder_accepts_files(path: &Path) -> bool {
    let name = path.file_name().map_or_else(|| "db".into(), |n| n.to_string_lossy());
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = path.with_file_name(format!(".{name}.probe-{}-{n}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            true
        }
        // A probe left by a killed process of the same id: the folder took it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// The `file:` URI that opens `path` immutable.
pub(crate) fn immutable_uri(path: &Path) -> Result<String, Error> {
    let path = std::path::absolute(path).map_err(|e| Error::Open { path: path.into(), reason: e.to_string() })?;
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = format!("/{}", path.to_string_lossy().replace('\\', "/")).into_bytes();
    // `file://` with an empty authority, then the path, every byte outside
    // RFC 3986's unreserved set and `/` percent-encoded.
    let mut uri = String::from("file://");
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(b as char);
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}
