//! Which data a sweep and its jobs are bound to (schema version 3): the data
//! key the scheduler computes from the images, labels, weights and split, and
//! the manifest it was computed from.

use std::collections::HashMap;

use crate::sql::args;
use crate::{now_text, Error, Store};

impl Store {
    /// The data key a sweep is bound to; `None` when the sweep is unknown or
    /// not bound yet.
    pub fn sweep_data_key(&self, sweep_id: &str) -> Result<Option<String>, Error> {
        self.read(|tx| match tx.query_opt("SELECT data_key FROM sweeps WHERE id = ?1", args![sweep_id])? {
            Some(r) => r.get(0),
            None => Ok(None),
        })
    }

    /// Whether a sweep is recorded.
    pub fn has_sweep(&self, sweep_id: &str) -> Result<bool, Error> {
        self.read(|tx| tx.value::<i64>("SELECT count(*) FROM sweeps WHERE id = ?1", args![sweep_id])).map(|n| n > 0)
    }

    /// The data keys of those of `job_ids` that are recorded and bound.
    pub fn job_data_keys(&self, job_ids: &[&str]) -> Result<HashMap<String, String>, Error> {
        self.read(|tx| {
            let mut out = HashMap::new();
            for id in job_ids {
                let sql = "SELECT data_key FROM jobs WHERE id = ?1 AND data_key IS NOT NULL";
                if let Some(row) = tx.query_opt(sql, args![*id])? {
                    out.insert((*id).to_owned(), row.get(0)?);
                }
            }
            Ok(out)
        })
    }

    /// The manifest recorded for a data key.
    pub fn data_manifest(&self, data_key: &str) -> Result<Option<String>, Error> {
        self.read(|tx| {
            tx.query_opt("SELECT manifest FROM data_manifests WHERE data_key = ?1", args![data_key])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    /// Binds a registered sweep and its jobs to `data_key` where they are not
    /// bound yet, and records the manifest, in one transaction. A sweep or job
    /// already bound keeps its key. `manifest` gives the manifest's JSON; it
    /// is called only when none is recorded for `data_key` yet (at a million
    /// images the JSON is tens of megabytes: a resumed run does not make it).
    pub fn bind_data(
        &self,
        sweep_id: &str,
        job_ids: &[&str],
        data_key: &str,
        manifest: &(dyn Fn() -> String + Sync),
    ) -> Result<(), Error> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM data_manifests WHERE data_key = ?1", args![data_key])?.is_none() {
                tx.exec(
                    "INSERT INTO data_manifests (data_key, manifest, recorded_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    args![data_key, manifest(), now_text()],
                )?;
            }
            tx.exec("UPDATE sweeps SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL", args![sweep_id, data_key])?;
            for id in job_ids {
                tx.exec("UPDATE jobs SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL", args![*id, data_key])?;
            }
            Ok(())
        })
    }
}
