//! The server's one read-only connection, shared by the requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sweep_results::SweepResults;
use sweep_store::{Location, Store};

use crate::{Config, Error};

/// What every request reads through.
#[derive(Debug)]
pub struct State {
    config: Config,
    /// One read-only connection; requests take turns (each read is short).
    store: Mutex<Opened>,
    /// Sweeps' results as last read, while the database's `data_version`
    /// says nobody has committed since: a page's endpoints and its polls of
    /// a sweep that is not running read the store once.
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    version: Option<i64>,
    sweeps: HashMap<String, Arc<SweepResults>>,
}

/// The connection, and whether a database was there to open.
#[derive(Debug)]
pub(crate) struct Opened {
    store: Store,
    /// Whether the file held a database when opened: a missing or empty one
    /// reads as empty and is opened again on each request until it does.
    real: bool,
}

impl State {
    /// Opens `config.db` read-only.
    pub fn open(config: Config) -> Result<State, Error> {
        let opened = Opened::open(&config)?;
        Ok(State { config, store: Mutex::new(opened), cache: Mutex::default() })
    }

    /// The speed-only keys, as `sweep-results` takes them.
    pub(crate) fn speed_only(&self) -> Vec<&str> {
        self.config.speed_only.iter().map(String::as_str).collect()
    }

    /// The connection, opened again while the file held no database.
    pub(crate) fn store(&self) -> Result<MutexGuard<'_, Opened>, Error> {
        let mut guard = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !guard.real {
            *guard = Opened::open(&self.config)?;
        }
        Ok(guard)
    }
}

impl State {
    /// A sweep's results, read again only when another connection has
    /// committed since they were read (`store` is this state's, locked).
    pub(crate) fn results(
        &self,
        store: &Store,
        sweep: sweep_store::SweepRow,
    ) -> Result<Arc<SweepResults>, sweep_results::Error> {
        let version = store.data_version()?;
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.version != Some(version) {
            cache.sweeps.clear();
            cache.version = Some(version);
        }
        if let Some(results) = cache.sweeps.get(&sweep.id) {
            return Ok(results.clone());
        }
        let id = sweep.id.clone();
        let results = Arc::new(SweepResults::load(store, sweep, &self.speed_only())?);
        cache.sweeps.insert(id, results.clone());
        Ok(results)
    }
}

impl Opened {
    fn open(config: &Config) -> Result<Opened, Error> {
        let store = Store::open_read_only(&config.db)?;
        let real = match &config.db {
            Location::Sqlite(path) => std::fs::metadata(path).is_ok_and(|m| m.len() > 0),
            // An empty database reads as empty until its first sweep.
            Location::Postgres(_) => !store.sweeps()?.is_empty(),
        };
        Ok(Opened { store, real })
    }
}

impl std::ops::Deref for Opened {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}
