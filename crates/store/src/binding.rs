//! Which data a sweep and its jobs are bound to (schema version 3): the data
//! key the scheduler computes from the images, labels, weights and split, and
//! the manifest it was computed from, recorded in parts (schema version 7).

use std::collections::HashMap;
use std::ops::Range;

use crate::sql::args;
use crate::{now_text, Error, Store};

/// The schema version that records manifests in parts.
const MANIFEST_PARTS: i64 = 7;

/// The most images in one part of a recorded manifest.
pub const MANIFEST_PART: usize = 16_384;

/// A data manifest's JSON, as [`Store::bind_data`] records it: the manifest
/// without its images, and its images a part at a time.
pub trait ManifestJson: Sync {
    /// The manifest's JSON with an empty list of images.
    fn header(&self) -> String;
    /// How many images it lists.
    fn images(&self) -> usize;
    /// The images in `range`, a JSON list.
    fn items(&self, range: Range<usize>) -> String;
}

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

    /// The manifest recorded for a data key, without the images of its
    /// parts ([`data_manifest_part`](Self::data_manifest_part)).
    pub fn data_manifest(&self, data_key: &str) -> Result<Option<String>, Error> {
        self.read(|tx| {
            tx.query_opt("SELECT manifest FROM data_manifests WHERE data_key = ?1", args![data_key])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    /// The images of a recorded manifest's `part`-th part (a JSON list);
    /// `None` past its last part. A manifest and its parts are recorded in
    /// one transaction and never change, so they may be read in several.
    pub fn data_manifest_part(&self, data_key: &str, part: usize) -> Result<Option<String>, Error> {
        if self.schema < MANIFEST_PARTS {
            return Ok(None);
        }
        self.read(|tx| {
            let sql = "SELECT items FROM data_manifest_parts WHERE data_key = ?1 AND part = ?2";
            tx.query_opt(sql, args![data_key, part as i64])?.map(|r| r.get(0)).transpose()
        })
    }

    /// Binds a registered sweep and its jobs to `data_key` where they are not
    /// bound yet, and records the manifest, in one transaction. A sweep or job
    /// already bound keeps its key. The manifest's JSON is made only when none
    /// is recorded for `data_key` yet, and a part at a time
    /// ([`MANIFEST_PART`] images): at a million images it is tens of
    /// megabytes, which neither a resumed run nor the first one holds at once.
    pub fn bind_data(
        &self,
        sweep_id: &str,
        job_ids: &[&str],
        data_key: &str,
        manifest: &dyn ManifestJson,
    ) -> Result<(), Error> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM data_manifests WHERE data_key = ?1", args![data_key])?.is_none() {
                tx.exec(
                    "INSERT INTO data_manifests (data_key, manifest, recorded_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    args![data_key, manifest.header(), now_text()],
                )?;
                let images = manifest.images();
                for (part, start) in (0..images).step_by(MANIFEST_PART).enumerate() {
                    tx.exec(
                        "INSERT INTO data_manifest_parts (data_key, part, items) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                        args![data_key, part as i64, manifest.items(start..images.min(start + MANIFEST_PART))],
                    )?;
                }
            }
            tx.exec("UPDATE sweeps SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL", args![sweep_id, data_key])?;
            for id in job_ids {
                tx.exec("UPDATE jobs SET data_key = ?2 WHERE id = ?1 AND data_key IS NULL", args![*id, data_key])?;
            }
            Ok(())
        })
    }
}
