//! Where a sweep database lives: an SQLite file, or a PostgreSQL database
//! named by a URL. What `--db` (and `SWEEP_DB`) parse into, and what every
//! error about the database names. A PostgreSQL URL is shown without its
//! password, in errors, logs and `Debug` alike; only the connection sees it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A sweep database: an SQLite file or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (`--db PATH` or `--db sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`--db postgres://USER@HOST[:PORT]/DB`).
    Postgres(PgUrl),
}

/// A PostgreSQL URL whose password is never shown: `Display` and `Debug`
/// print it without one.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// As given, password included: only for connecting.
    full: String,
    /// Without the password.
    shown: String,
}

impl PgUrl {
    /// The URL as given, password included: for connecting only, never for printing.
    pub(crate) fn secret(&self) -> &str {
        &self.full
    }

    /// The same URL naming another database of the same server (tests and
    /// benchmarks create their own databases).
    pub fn with_database(&self, name: &str) -> PgUrl {
        let (head, query) = match self.full.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (self.full.as_str(), None),
        };
        let scheme_end = head.find("://").map_or(0, |i| i + 3);
        let base = match head[scheme_end..].find('/') {
            Some(i) => &head[..scheme_end + i],
            None => head,
        };
        let full = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        PgUrl { shown: redact(&full), full }
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({:?})", self.shown)
    }
}

/// A `--db` that is neither a path nor a PostgreSQL URL we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown}: {reason}")]
pub struct BadLocation {
    /// The location, without its password.
    shown: String,
    /// What is wrong.
    reason: String,
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite:PATH` or any
    /// other text is an SQLite file.
    pub fn parse(text: &str) -> Result<Location, BadLocation> {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let shown = redact(text);
            if let Err(e) = text.parse::<postgres::Config>() {
                // The parser's message never quotes the URL back.
                return Err(BadLocation { shown, reason: format!("not a PostgreSQL URL we can read: {e}") });
            }
            return Ok(Location::Postgres(PgUrl { full: text.to_owned(), shown }));
        }
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            return Err(BadLocation {
                shown: redact(text),
                reason: "a PostgreSQL URL starts with postgres:// (postgres://USER@HOST[:PORT]/DB)".to_owned(),
            });
        }
        let path = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")).unwrap_or(text);
        if path.is_empty() {
            return Err(BadLocation { shown: text.to_owned(), reason: "no database file named".to_owned() });
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }

    /// The SQLite file, `None` for PostgreSQL.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl FromStr for Location {
    type Err = BadLocation;
    fn from_str(s: &str) -> Result<Location, BadLocation> {
        Location::parse(s)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Sqlite(path)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Sqlite(path.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Sqlite(path.clone())
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Location {
        location.clone()
    }
}

/// A PostgreSQL URL without its password: the `:password` of the user
/// information and any `password=` query parameter are left out.
fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let (scheme, rest) = head.split_at(scheme_end);
    // The user information ends at the authority's last `@` (a password may
    // hold a raw `@` or `/`; the host never does).
    let mut out = scheme.to_owned();
    match rest.rfind('@') {
        Some(at) => {
            let user = &rest[..at];
            out.push_str(user.split_once(':').map_or(user, |(u, _)| u));
            out.push_str(&rest[at..]);
        }
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        let kept: Vec<&str> = query.split('&').filter(|p| !p.to_ascii_lowercase().starts_with("password=")).collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sqlite_urls_are_sqlite_files() {
        assert_eq!(Location::parse("sweep.db").unwrap(), Location::Sqlite("sweep.db".into()));
        assert_eq!(Location::parse("sqlite:/a/b.db").unwrap(), Location::Sqlite("/a/b.db".into()));
        assert_eq!(Location::parse("sqlite://rel.db").unwrap(), Location::Sqlite("rel.db".into()));
        assert!(Location::parse("sqlite:").is_err());
    }

    #[test]
    fn postgres_urls_never_show_their_password() {
        for url in [
            "postgres://alice:s3cret@db.lab:5433/sweeps",
            "postgresql://alice:s3cret@db.lab/sweeps?sslmode=disable",
            "postgres://alice@db.lab/sweeps?password=s3cret",
            "postgres://alice:s3c@r/et@db.lab/sweeps",
        ] {
            let location = Location::parse(url).unwrap();
            assert!(location.is_postgres());
            for shown in [location.to_string(), format!("{location:?}")] {
                assert!(!shown.contains("s3c"), "{shown}");
                assert!(shown.contains("alice") && shown.contains("db.lab"), "{shown}");
            }
        }
        let location = Location::parse("postgres://alice:s3cret@db.lab:5433/sweeps?sslmode=disable").unwrap();
        assert_eq!(location.to_string(), "postgres://alice@db.lab:5433/sweeps?sslmode=disable");
        let bad = Location::parse("postgres://alice:s3cret@db.lab:notaport/x").unwrap_err().to_string();
        assert!(!bad.contains("s3cret") && bad.starts_with("postgres://alice@db.lab"), "{bad}");
    }

    #[test]
    fn another_database_of_the_same_server() {
        let Location::Postgres(url) = Location::parse("postgres://u:pw@h:1/postgres?sslmode=disable").unwrap() else {
            panic!()
        };
        let other = url.with_database("sweep_test_1");
        assert_eq!(other.secret(), "postgres://u:pw@h:1/sweep_test_1?sslmode=disable");
        assert_eq!(other.to_string(), "postgres://u@h:1/sweep_test_1?sslmode=disable");
    }
}
