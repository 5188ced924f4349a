//! The backbone pass as shared work: shards of a feature-cache entry's
//! images, claimed under leases like jobs (`migrations/0005-feature-shards`).

use std::time::Duration;

use crate::sql::{args, Row};
use crate::{now_ms, Error, Store};

/// A shard of a feature pass handed to a runner by [`Store::claim_feature_shard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureShard {
    /// Its number, from 0.
    pub shard: i64,
    /// Shards of the pass.
    pub shards: i64,
    /// The data-set index of its first image.
    pub first_image: i64,
    /// Its images.
    pub images: i64,
}

/// Where a feature pass stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardCounts {
    /// Shards in all.
    pub shards: usize,
    /// Shards done.
    pub done: usize,
    /// Images of the shards done.
    pub images_done: u64,
}

impl Store {
    /// Splits the pass of cache entry `key` over `images` images into shards
    /// of `per_shard` images, unless it is split already (then the recorded
    /// split stands, whatever `per_shard` says). Returns the shard count.
    pub fn add_feature_shards(&self, key: &str, images: u64, per_shard: u64) -> Result<usize, Error> {
        let per_shard = per_shard.max(1);
        let shards = images.div_ceil(per_shard).max(1);
        let n: i64 = self.write(|tx| {
            for shard in 0..shards {
                let first = shard * per_shard;
                let count = per_shard.min(images - first.min(images)).max(1);
                tx.exec(
                    "INSERT INTO feature_shards (cache_key, shard, shards, first_image, images)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    args![key, shard as i64, shards as i64, first as i64, count as i64],
                )?;
            }
            tx.value("SELECT COUNT(*) FROM feature_shards WHERE cache_key = ?1", args![key])
        })?;
        Ok(n as usize)
    }

    /// Claims the entry's next shard to compute (pending, or running under
    /// an expired lease) for `owner`.
    pub fn claim_feature_shard(
        &mut self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<FeatureShard>, Error> {
        self.write(|tx| {
            // On PostgreSQL the shard's row is locked with `FOR UPDATE SKIP
            // LOCKED`, so claimers at once take different shards.
            let lock = if tx.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
            let now = now_ms();
            let sql = format!(
                "UPDATE feature_shards SET status = 'running', lease_owner = ?2, lease_expires = ?4,
                        attempts = attempts + 1
                 WHERE cache_key = ?1 AND shard = (
                     SELECT shard FROM feature_shards
                     WHERE cache_key = ?1 AND (status = 'pending' OR (status = 'running' AND lease_expires < ?3))
                     ORDER BY shard LIMIT 1{lock})
                 RETURNING shard, shards, first_image, images"
            );
            tx.query_opt(&sql, args![key, owner, now, now + lease.as_millis() as i64])?
                .as_ref()
                .map(shard_row)
                .transpose()
        })
    }

    /// Extends the lease on a shard; [`Error::LeaseLost`] when `owner` no longer holds it.
    pub fn renew_feature_shard(&self, key: &str, shard: i64, owner: &str, lease: Duration) -> Result<(), Error> {
        let n = self.write(|tx| {
            tx.exec(
                "UPDATE feature_shards SET lease_expires = ?4
                 WHERE cache_key = ?1 AND shard = ?2 AND lease_owner = ?3 AND status = 'running'",
                args![key, shard, owner, now_ms() + lease.as_millis() as i64],
            )
        })?;
        match n {
            1 => Ok(()),
            _ => Err(Error::LeaseLost { job_id: format!("feature shard {shard} of {key}") }),
        }
    }

    /// Ends `owner`'s lease on a shard: done (its entry is in the cache), or
    /// given back (`done` false) to be claimed again.
    pub fn finish_feature_shard(
        &self,
        key: &str,
        shard: i64,
        owner: &str,
        done: bool,
        seconds: Option<f64>,
    ) -> Result<(), Error> {
        self.write(|tx| {
            tx.exec(
                "UPDATE feature_shards SET status = ?4, lease_owner = NULL, lease_expires = NULL,
                        seconds = COALESCE(?5, seconds)
                 WHERE cache_key = ?1 AND shard = ?2 AND lease_owner = ?3 AND status = 'running'",
                args![key, shard, owner, if done { "done" } else { "pending" }, seconds],
            )
        })?;
        Ok(())
    }

    /// Makes a done shard pending again (its cache entry is gone or bad).
    pub fn redo_feature_shard(&self, key: &str, shard: i64) -> Result<(), Error> {
        self.write(|tx| {
            tx.exec(
                "UPDATE feature_shards SET status = 'pending' WHERE cache_key = ?1 AND shard = ?2 AND status = 'done'",
                args![key, shard],
            )
        })?;
        Ok(())
    }

    /// The running shards of an entry with their lease owners.
    pub fn feature_shard_leases(&self, key: &str) -> Result<Vec<(i64, String)>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT shard, lease_owner FROM feature_shards
                 WHERE cache_key = ?1 AND status = 'running' AND lease_owner IS NOT NULL ORDER BY shard",
                args![key],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Ends the lease on a shard held by a runner known to be dead.
    pub fn expire_feature_shard(&self, key: &str, shard: i64, owner: &str) -> Result<bool, Error> {
        let n = self.write(|tx| {
            tx.exec(
                "UPDATE feature_shards SET lease_expires = 0
                 WHERE cache_key = ?1 AND shard = ?2 AND lease_owner = ?3 AND status = 'running'",
                args![key, shard, owner],
            )
        })?;
        Ok(n == 1)
    }

    /// The entry's shards, in order.
    pub fn feature_shards(&self, key: &str) -> Result<Vec<FeatureShard>, Error> {
        self.read(|tx| {
            tx.query(
                "SELECT shard, shards, first_image, images FROM feature_shards WHERE cache_key = ?1 ORDER BY shard",
                args![key],
            )?
            .iter()
            .map(shard_row)
            .collect()
        })
    }

    /// How far the entry's pass is.
    pub fn feature_shard_counts(&self, key: &str) -> Result<ShardCounts, Error> {
        self.read(|tx| {
            // Sums cast back to BIGINT: PostgreSQL sums BIGINTs as NUMERIC.
            let row = tx.query_opt(
                "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT),
                        CAST(COALESCE(SUM(CASE WHEN status = 'done' THEN images ELSE 0 END), 0) AS BIGINT)
                 FROM feature_shards WHERE cache_key = ?1",
                args![key],
            )?;
            match row {
                Some(r) => Ok(ShardCounts {
                    shards: r.get::<i64>(0)? as usize,
                    done: r.get::<i64>(1)? as usize,
                    images_done: r.get::<i64>(2)? as u64,
                }),
                None => Ok(ShardCounts::default()),
            }
        })
    }
}

/// A shard's row: shard, shards, first image, images.
fn shard_row(r: &Row) -> Result<FeatureShard, Error> {
    Ok(FeatureShard { shard: r.get(0)?, shards: r.get(1)?, first_image: r.get(2)?, images: r.get(3)? })
}
