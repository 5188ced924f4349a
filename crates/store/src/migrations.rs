//! The schema's migrations, embedded from the top-level `migrations/` folder:
//! `NNNN-name/up.sql`, numbered from 1 without gaps. Never edit one that has
//! landed; add the next.

use include_dir::{include_dir, Dir};
use std::sync::LazyLock;

static DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../migrations");

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; the schema version after it.
    pub version: i64,
    /// Its folder's name.
    pub name: &'static str,
    /// Its SQL.
    pub up: &'static str,
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
            Migration { version, name, up }
        })
        .collect();
    out.sort_by_key(|m| m.version);
    out
});

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
