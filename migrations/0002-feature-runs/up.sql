-- One row per feature pass of a sweep's run: a backbone pass that computed and
-- cached the features, or a cache hit that reused them. `sweeps.features_key`
-- and `sweeps.features_reused` keep describing the latest run only.
CREATE TABLE feature_runs (
    id          INTEGER PRIMARY KEY,
    sweep_id    TEXT REFERENCES sweeps(id),
    cache_key   TEXT NOT NULL,             -- the feature-cache key
    reused      INTEGER NOT NULL CHECK (reused IN (0, 1)),  -- 1 for a cache hit
    images      INTEGER NOT NULL,          -- images the features cover
    seconds     REAL,                      -- the pass (or the cache read), when timed
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX feature_runs_by_sweep ON feature_runs(sweep_id);
