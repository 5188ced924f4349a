//! Which data a sweep and its jobs are bound to (schema version 3): the data
//! key the scheduler computes from the images, labels, weights and split, and
//! the manifest it was computed from.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use crate::{Error, Store};

impl Store {
    /// The data key a sweep is bound to; `None` when the sweep is unknown or
    /// not bound yet.
    pub fn sweep_data_key(&self, sweep_id: &str) -> Result<Option<String>, Error> {
        self.read(|conn| {
            conn.query_row("SELECT data_key FROM sweeps WHERE id = ?1", [sweep_id], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
    }

    /// Whether a sweep is recorded.
    pub fn has_sweep(&self, sweep_id: &str) -> Result<bool, Error> {
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM sweeps WHERE id = ?1", [sweep_id], |r| r.get::<_, i64>(0))
        })
        .map(|n| n > 0)
    }

    /// The data keys of those of `job_ids` that are recorded and bound.
    pub fn job_data_keys(&self, job_ids: &[&str]) -> Result<HashMap<String, String>, Error> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT data_key FROM jobs WHERE id = ?1 AND data_key IS NOT NULL")?;
            let mut out = HashMap::new();
            for id in job_ids {
                if let Some(key) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? {
                    out.insert((*id).to_owned(), key);
                }
            }
            Ok(out)
        })
    }

    /// The manifest recorded for a data key.
    pub fn data_manifest(&self, data_key: &str) -> Result<Option<String>, Error> {
        self.read(|conn| {
            conn.query_row("SELECT manifest FROM data_manifests WHERE data_key = ?1", [data_key], |r| r.get(0))
                .optional()
        })
    }

    /// Binds a registered sweep and its jobs to `data_key` where they are not
    /// bound yet, and records the manifest, in one transaction. A sweep or job
    /// already bound keeps its key.
    pub fn bind_data(&self, sweep_id: &str, job_ids: &[&str], data_key: &str, manifest: &str) -> Result<(), Error> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO data_manifests (data_key, manifest) VALUES (?1, ?2)",
                params![data_key, manifest],
            )?;
            tx.execute(
                "UPDATE sweeps SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL",
                params![sweep_id, data_key],
            )?;
            let mut bind = tx.prepare("UPDATE jobs SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL")?;
            for id in job_ids {
                bind.execute(params![id, data_key])?;
            }
            Ok(())
        })
    }
}
