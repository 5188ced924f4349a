//! The backbone pass as work shared by every runner of a sweep: a pass over
//! more images than a shard holds is split into shards recorded in the store
//! (`Store::add_feature_shards`), each claimed under a lease like a job,
//! computed, and written to the feature cache as an entry of its own (by
//! rename: no process ever reads half a file). When every shard is done, a
//! runner joins them into the entry. N workers compute a pass about N times
//! faster, and a pass stopped half way resumes from its last shard.
//!
//! Shards hold a whole number of backbone batches, so each image goes
//! through the backbone in the same batch as in a pass of one process: the
//! features are bit-identical.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sweep_store::Store;
use sweep_worker::{CacheOutcome, Dataset, Device, FeatureCache, Features, ModelConfig, ShardPass};
use tokio_util::sync::CancellationToken;

use crate::run::{owner_is_dead, Error};

/// How a pass is shared.
pub(crate) struct Sharing<'a> {
    /// The store where shards are claimed.
    pub(crate) db: &'a sweep_store::Location,
    /// This runner's lease owner name.
    pub(crate) owner: &'a str,
    /// How long a shard's claim lasts without renewal.
    pub(crate) lease: Duration,
    /// Images a shard holds at most (rounded up to whole backbone batches).
    pub(crate) per_shard: usize,
    /// Stops the pass between shards.
    pub(crate) cancel: &'a CancellationToken,
}

/// How often a runner whose shards are all claimed looks at the others' progress.
const POLL: Duration = Duration::from_millis(200);

/// The features of `dataset` (whose images the caller has checked): from
/// the cache, from one process's pass when the data set fits in one shard,
/// otherwise from shards shared with every other runner.
#[allow(clippy::too_many_arguments)]
pub(crate) fn features(
    dataset: &Dataset,
    model: &ModelConfig,
    key: &str,
    cache: &FeatureCache,
    workers: usize,
    batch_size: usize,
    devices: &[Device],
    progress: sweep_worker::Progress<'_>,
    backbone: Option<sweep_worker::Backbone>,
    sharing: &Sharing<'_>,
) -> Result<Features, Error> {
    let (n, dim) = (dataset.items.len(), model.arch.feature_dim());
    let per_shard = sharing.per_shard.max(1).div_ceil(batch_size.max(1)) * batch_size.max(1);
    if n <= per_shard {
        return Ok(sweep_worker::compute_features_keyed(
            dataset, model, key, cache, workers, batch_size, devices, progress, backbone,
        )?);
    }
    if let Some(data) = sweep_worker::cached_features(cache, key, n, dim) {
        tracing::info!(key, "feature cache hit: no backbone pass");
        progress(n);
        return Ok(Features { data, key: key.to_owned(), outcome: CacheOutcome::Hit });
    }
    let store = Mutex::new(Store::open(sharing.db)?);
    let lock = || store.lock().unwrap_or_else(|e| e.into_inner());
    let shards = lock().add_feature_shards(key, n as u64, per_shard as u64)?;
    tracing::info!(key, shards, images = n, "the backbone pass is split into shards that runners share");
    // The backbone the sanity check loaded, if it ran: the pass uses it.
    let mut loaded = backbone;
    let mut pass: Option<ShardPass<'_>> = None;
    loop {
        if sharing.cancel.is_cancelled() {
            return Err(Error::Join("the backbone pass was stopped".to_owned()));
        }
        let leases = lock().feature_shard_leases(key)?;
        for (shard, owner) in leases {
            if owner_is_dead(&owner, sharing.owner) && lock().expire_feature_shard(key, shard, &owner)? {
                tracing::info!(shard, owner, "its runner is gone: the feature shard can be computed now");
            }
        }
        let claimed = lock().claim_feature_shard(key, sharing.owner, sharing.lease)?;
        let Some(shard) = claimed else {
            let counts = lock().feature_shard_counts(key)?;
            progress(counts.images_done as usize);
            if counts.done < counts.shards {
                // Others compute the rest: wait for them.
                std::thread::sleep(POLL);
                continue;
            }
            if let Some(data) = sweep_worker::cached_features(cache, key, n, dim) {
                return Ok(Features { data, key: key.to_owned(), outcome: CacheOutcome::Built });
            }
            let list: Vec<(usize, usize)> =
                lock().feature_shards(key)?.iter().map(|s| (s.shard as usize, s.images as usize)).collect();
            match sweep_worker::join_shards(cache, key, &list, dim)? {
                Ok(data) => {
                    tracing::info!(key, images = n, "feature shards joined into the cache entry");
                    return Ok(Features { data, key: key.to_owned(), outcome: CacheOutcome::Built });
                }
                // Joined by another runner meanwhile (it removes the shards).
                Err(_) if sweep_worker::cached_features(cache, key, n, dim).is_some() => continue,
                Err(bad) => {
                    tracing::warn!(key, shards = ?bad, "feature shards missing from the cache: computing them again");
                    for shard in bad {
                        lock().redo_feature_shard(key, shard as i64)?;
                    }
                    continue;
                }
            }
        };
        let pass = match &mut pass {
            Some(pass) => pass,
            None => pass.insert(ShardPass::new(dataset, model, cache, workers, batch_size, devices, loaded.take())?),
        };
        let started = Instant::now();
        let done_before = lock().feature_shard_counts(key)?.images_done as usize;
        let last_renew = Mutex::new(Instant::now());
        let shard_progress = |done: usize| {
            progress(done_before + done);
            let mut last = last_renew.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() > sharing.lease / 3 {
                match lock().renew_feature_shard(key, shard.shard, sharing.owner, sharing.lease) {
                    Ok(()) => *last = Instant::now(),
                    Err(e) => tracing::warn!(error = %e, "cannot renew the feature shard's lease"),
                }
            }
        };
        let first = shard.first_image as usize;
        let range = first..first + shard.images as usize;
        let computed = pass.compute(key, shard.shard as usize, shard.shards as usize, range, &shard_progress);
        let seconds = started.elapsed().as_secs_f64();
        let finished = lock().finish_feature_shard(key, shard.shard, sharing.owner, computed.is_ok(), Some(seconds));
        computed?;
        finished?;
        tracing::info!(shard = shard.shard, shards = shard.shards, seconds, "feature shard computed");
    }
}
