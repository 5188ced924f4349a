//! The schema's migrations, embedded from the top-level `migrations/` folder:
//! `NNNN-name/up.sql` (SQLite) and `NNNN-name/postgres.sql` (the same schema
//! in PostgreSQL's types), numbered from 1 without gaps. Never edit one that
//! has landed; add the next, in both dialects.
//!
//! `Store::migrate` applies them, in one transaction, when a database is
//! opened (on PostgreSQL: `postgres.rs`, with its version table).

use include_dir::{include_dir, Dir};
use rusqlite::{Transaction, TransactionBehavior};
use std::sync::LazyLock;

use crate::busy::{is_busy, retry};
use crate::error::classify;
use crate::sql::Db;
use crate::{Error, Store, APPLICATION_ID};

static DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../migrations");

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; the schema version after it.
    pub version: i64,
    /// Its folder's name.
    pub name: &'static str,
    /// Its SQL for SQLite.
    pub up: &'static str,
    /// Its SQL for PostgreSQL; `None` where the folder has no `postgres.sql`
    /// (such a build refuses to open PostgreSQL databases, naming it).
    pub postgres: Option<&'static str>,
}

/// Every migration, in order.
pub static MIGRATIONS: LazyLock<Vec<Migration>> = LazyLock::new(|| {
    let mut out: Vec<Migration> = DIR
        .dirs()
        .map(|dir| {
            let name = dir.path().to_str().expect("migration names are UTF-8");
            let version =
                name.split('-').next().and_then(|n| n.parse().ok()).expect("migration folders start with a number");
            let up = dir
                .get_file(dir.path().join("up.sql"))
                .and_then(|f| f.contents_utf8())
                .expect("every migration has an up.sql");
            let postgres = dir.get_file(dir.path().join("postgres.sql")).and_then(|f| f.contents_utf8());
            Migration { version, name, up, postgres }
        })
        .collect();
    out.sort_by_key(|m| m.version);
    out
});

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

impl Store {
    /// Applies every migration past the file's version in one transaction:
    /// the file ends at the latest version or, when one fails, at the one it had.
    pub(crate) fn migrate(&self, migrations: &[Migration]) -> Result<(), Error> {
        let conn = match &self.db {
            Db::Sqlite(conn) => conn,
            Db::Postgres(client) => return self.migrate_postgres(client.borrow_mut().get(), migrations),
        };
        let path = &self.path;
        let latest = migrations.last().map_or(0, |m| m.version);
        let sqlite = |e: rusqlite::Error| classify(path, e);
        retry(path, self.patience, || {
            // Dropping `tx` on an error rolls back every migration of this attempt.
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sqlite)?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sqlite)?;
            if version > latest {
                return Err(Error::TooNew { path: path.clone(), found: version, supported: latest });
            }
            for m in migrations.iter().filter(|m| m.version > version) {
                tracing::info!(version = m.version, name = m.name, "applying migration");
                tx.execute_batch(m.up).map_err(|e| match is_busy(&e) {
                    true => sqlite(e),
                    false => Error::Migration { path: path.clone(), name: m.name.to_owned(), reason: e.to_string() },
                })?;
            }
            if version < latest {
                tx.pragma_update(None, "user_version", latest).map_err(sqlite)?;
                tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sqlite)?;
            }
            tx.commit().map_err(sqlite)
        })
    }
}
