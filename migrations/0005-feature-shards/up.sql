-- The backbone pass as work that several workers share: the images of a
-- feature-cache entry are split into shards, each claimed under a lease like
-- a job, computed, and written to the cache as its own entry (by rename);
-- when every shard is done, any worker joins them into the entry. A shard's
-- row outlives the pass: the cache key is content-addressed.
CREATE TABLE feature_shards (
    cache_key     TEXT NOT NULL,
    shard         INTEGER NOT NULL CHECK (shard >= 0),
    shards        INTEGER NOT NULL CHECK (shards > shard),
    first_image   INTEGER NOT NULL,          -- data-set index of its first image
    images        INTEGER NOT NULL CHECK (images > 0),
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done')),
    lease_owner   TEXT,
    lease_expires INTEGER,                   -- unix milliseconds
    attempts      INTEGER NOT NULL DEFAULT 0,
    seconds       REAL,                      -- the shard's backbone time, when done
    PRIMARY KEY (cache_key, shard)
) STRICT;
