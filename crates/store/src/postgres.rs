//! The store on PostgreSQL: connecting (the password from the URL,
//! `PGPASSWORD` or the pgpass file; no TLS), the checks before a database is
//! used (a sweep database, not another program's, not newer than this build),
//! and its migrations with their version table.
//!
//! PostgreSQL has no `user_version` or `application_id`: the table
//! `sweep_schema` (one row: `application`, `version`) holds both, and is
//! created by the first migration run. A database with tables but no
//! `sweep_schema` is another program's and is refused untouched.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};

use crate::busy::{retry, Patience};
use crate::error::pg_error;
use crate::sql::{off_runtime, Db, PgClient};
use crate::{Error, Location, Migration, PgUrl, Store, APPLICATION_ID};

/// What `sweep_schema.application` says in a sweep database.
const APPLICATION: &str = "sweep";

impl Store {
    /// Opens a PostgreSQL database: checks it, then migrates it to the latest
    /// schema, or, `read_only`, reads it as it is in a read-only session.
    pub(crate) fn open_postgres(url: &PgUrl, migrations: &[Migration], read_only: bool) -> Result<Store, Error> {
        let at = Location::Postgres(url.clone());
        let latest = migrations.last().map_or(0, |m| m.version);
        if let Some(m) = migrations.iter().find(|m| m.postgres.is_none()) {
            return Err(Error::Open {
                path: at,
                reason: format!(
                    "this build has no PostgreSQL form of migration {} (migrations/{}/postgres.sql)",
                    m.name, m.name
                ),
            });
        }
        let patience = Patience::DEFAULT;
        off_runtime(|| Store::open_postgres_here(url, at, migrations, read_only, latest, patience))
    }

    /// [`Store::open_postgres`] on the thread it runs on.
    fn open_postgres_here(
        url: &PgUrl,
        at: Location,
        migrations: &[Migration],
        read_only: bool,
        latest: i64,
        patience: Patience,
    ) -> Result<Store, Error> {
        let mut client = PgClient::new(connect(url, &at)?);
        let client_ref = client.get();
        let mut session = format!("SET lock_timeout = '{}ms'; SET TIME ZONE 'UTC';", patience.busy_timeout.as_millis());
        if read_only {
            session.push_str(" SET default_transaction_read_only = on;");
        }
        client_ref.batch_execute(&session).map_err(|e| pg_error(&at, e))?;
        if read_only {
            let found = retry(&at, patience, || {
                let mut tx = client_ref.transaction().map_err(|e| pg_error(&at, e))?;
                let found = schema_of(&mut tx, &at)?;
                tx.commit().map_err(|e| pg_error(&at, e))?;
                Ok(found)
            })?;
            return match found {
                // Nothing recorded yet: reads as empty, and stays untouched.
                None => Store::empty_read_only(at),
                Some(version) if version > latest => Err(Error::TooNew { path: at, found: version, supported: latest }),
                Some(version) => Ok(Store {
                    db: Db::Postgres(RefCell::new(client)),
                    path: at,
                    patience,
                    read_only: true,
                    schema: version,
                }),
            };
        }
        let store =
            Store { db: Db::Postgres(RefCell::new(client)), path: at, patience, read_only: false, schema: latest };
        if let Db::Postgres(client) = &store.db {
            store.migrate_postgres(client.borrow_mut().get(), migrations)?;
        }
        Ok(store)
    }

    /// Applies every migration past the database's version in one
    /// transaction, under an advisory lock, so workers opening a new database
    /// at once migrate it once: it ends at the latest version or, when one
    /// fails, at the one it had.
    pub(crate) fn migrate_postgres(&self, client: &mut Client, migrations: &[Migration]) -> Result<(), Error> {
        let at = &self.path;
        let latest = migrations.last().map_or(0, |m| m.version);
        retry(at, self.patience, || {
            let mut tx = client.transaction().map_err(|e| pg_error(at, e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&i64::from(APPLICATION_ID)])
                .map_err(|e| pg_error(at, e))?;
            let version = match schema_of(&mut tx, at)? {
                Some(v) => v,
                None => {
                    tx.batch_execute(
                        "CREATE TABLE sweep_schema (application TEXT NOT NULL, version BIGINT NOT NULL);
                         INSERT INTO sweep_schema VALUES ('sweep', 0);",
                    )
                    .map_err(|e| pg_error(at, e))?;
                    0
                }
            };
            if version > latest {
                return Err(Error::TooNew { path: at.clone(), found: version, supported: latest });
            }
            for m in migrations.iter().filter(|m| m.version > version) {
                tracing::info!(version = m.version, name = m.name, "applying migration");
                let sql = m.postgres.unwrap_or_default();
                tx.batch_execute(sql).map_err(|e| match pg_error(at, e) {
                    busy @ Error::Busy { .. } => busy,
                    other => Error::Migration { path: at.clone(), name: m.name.to_owned(), reason: other.to_string() },
                })?;
            }
            if version < latest {
                tx.execute("UPDATE sweep_schema SET version = $1", &[&latest]).map_err(|e| pg_error(at, e))?;
            }
            tx.commit().map_err(|e| pg_error(at, e))
        })
    }
}

/// The database's schema version; `None` for a database with no tables
/// (nothing recorded yet). A database with tables but no `sweep_schema`, or
/// one that names another application, is refused as foreign.
fn schema_of(tx: &mut postgres::Transaction<'_>, at: &Location) -> Result<Option<i64>, Error> {
    let has_schema: bool = tx
        .query_one("SELECT to_regclass('sweep_schema') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_error(at, e))?;
    if !has_schema {
        let tables: i64 = tx
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| pg_error(at, e))?;
        if tables > 0 {
            let reason = format!("it has {tables} tables but no sweep_schema table");
            return Err(Error::Foreign { path: at.clone(), reason });
        }
        return Ok(None);
    }
    let row = tx.query_opt("SELECT application, version FROM sweep_schema", &[]).map_err(|e| pg_error(at, e))?;
    let foreign = |reason: String| Error::Foreign { path: at.clone(), reason };
    let Some(row) = row else { return Err(foreign("its sweep_schema table is empty".to_owned())) };
    let application: String = row.try_get(0).map_err(|e| pg_error(at, e))?;
    if application != APPLICATION {
        return Err(foreign(format!("its sweep_schema names `{application}`")));
    }
    row.try_get(1).map(Some).map_err(|e| pg_error(at, e))
}

/// Connects to `url`. The password is the URL's, else `PGPASSWORD`'s, else
/// the pgpass file's (`PGPASSFILE` or `~/.pgpass`), as libpq looks for it; the
/// user is the URL's, else `PGUSER`, else `USER`. TLS is not built in:
/// `sslmode=prefer` (the default) connects without it, `sslmode=require` is
/// refused with a message that says so.
pub(crate) fn connect(url: &PgUrl, at: &Location) -> Result<Client, Error> {
    let open = |reason: String| Error::Open { path: at.clone(), reason };
    let mut config: Config =
        url.secret().parse().map_err(|e| open(format!("not a PostgreSQL URL we can read: {e}")))?;
    if config.get_ssl_mode() != SslMode::Disable && config.get_ssl_mode() != SslMode::Prefer {
        return Err(open(
            "sslmode=require: this build of sweep has no TLS; connect over a socket or a trusted network \
             (sslmode=disable or prefer), or through an SSH or stunnel tunnel"
                .to_owned(),
        ));
    }
    if config.get_user().is_none() {
        if let Some(user) = std::env::var("PGUSER").ok().or_else(|| std::env::var("USER").ok()) {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        let password = match std::env::var("PGPASSWORD") {
            Ok(p) if !p.is_empty() => Some(p),
            _ => pgpass_file().and_then(|file| {
                let text = std::fs::read_to_string(&file).ok()?;
                pgpass_lookup(&text, &config)
            }),
        };
        if let Some(password) = password {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    config.connect(NoTls).map_err(|e| open(e.to_string()))
}

/// The pgpass file, as libpq finds it: `PGPASSFILE`, else `~/.pgpass`; on
/// Unix, libpq ignores one that its group or others can read, and so do we.
fn pgpass_file() -> Option<PathBuf> {
    let file = match std::env::var_os("PGPASSFILE") {
        Some(f) => PathBuf::from(f),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&file).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "the password file is readable by others (chmod 0600 it): not used");
            return None;
        }
    }
    meta.is_file().then_some(file)
}

/// The password of the first line of a pgpass file
/// (`hostname:port:database:username:password`, `*` matching anything, `\:`
/// and `\\` escaped) that matches the connection's first host, port,
/// database and user. A socket host matches `localhost`.
pub(crate) fn pgpass_lookup(text: &str, config: &Config) -> Option<String> {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(_)) => "localhost".to_owned(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let db = config.get_dbname().map_or_else(|| user.clone(), str::to_owned);
    let want = [host.as_str(), port.as_str(), db.as_str(), user.as_str()];
    text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).find_map(|line| {
        let fields = pgpass_fields(line);
        if fields.len() < 5 {
            return None;
        }
        let matches = fields.iter().zip(want).all(|(f, w)| f == "*" || f == w);
        matches.then(|| fields[4..].join(":"))
    })
}

/// A pgpass line's fields, unescaped.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let config: Config = "postgres://alice@db.lab:5433/sweeps".parse().unwrap();
        let text = "# comment\n\
                    other:5433:sweeps:alice:wrong\n\
                    db.lab:5433:sweeps:bob:wrong\n\
                    db.lab:*:sweeps:alice:pa\\:ss\\\\word\n\
                    *:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, &config).as_deref(), Some("pa:ss\\word"));
        let config: Config = "postgres://carol@db.lab/x".parse().unwrap();
        assert_eq!(pgpass_lookup(text, &config).as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("db.lab:5432:x:dave:p\n", &config), None);
    }
}
