-- Pruning (issue 12): a job stopped early by the sweep's `[prune]` gets
-- status 'pruned', keeps its epochs, and records where and why it stopped.
-- A decision is recorded once, with the epoch that triggered it, and read
-- by every later run: a resumed or second process never decides it again.
--
-- Work nobody repeats (issue 12): a job that differs from an earlier job of
-- its sweep only in speed-only keys (`workers`) is not trained: `same_as`
-- names the job whose epochs it shares, and its status and best are copied
-- from it when that one ends.
--
-- SQLite cannot alter a CHECK constraint, so `jobs` is rebuilt with every row
-- (it has no index, trigger or view of its own). `epochs`, `checkpoints` and
-- `sweep_jobs` reference it: the foreign keys are checked at COMMIT (deferred),
-- when every row is back, rather than when the old table is dropped.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE jobs_before_0004 AS SELECT * FROM jobs;
DROP TABLE jobs;

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    config_json   TEXT NOT NULL,           -- resolved train settings
    batch_size    INTEGER NOT NULL,
    workers       INTEGER NOT NULL,
    lr            REAL NOT NULL,
    momentum      REAL NOT NULL,
    epochs        INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'pruned')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,                    -- host:pid:nonce of the runner holding it
    lease_expires INTEGER,                 -- unix milliseconds
    heartbeat_at  INTEGER,                 -- unix milliseconds
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    best_valid_acc REAL,
    best_epoch    INTEGER,
    seconds       REAL NOT NULL DEFAULT 0, -- training seconds, summed over epochs
    data_key      TEXT,                    -- migration 0003
    prune_epoch   INTEGER,                 -- the last epoch a pruned job ran
    prune_rung    INTEGER,                 -- ASHA: the rung (0, 1, ...) it stopped at
    prune_reason  TEXT,                    -- why, in words, with the numbers compared
    same_as       TEXT                     -- the job trained for it (its epochs are that job's)
) STRICT;

INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts, lease_owner,
                  lease_expires, heartbeat_at, started_at, finished_at, error, best_valid_acc, best_epoch, seconds,
                  data_key)
SELECT id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts, lease_owner,
       lease_expires, heartbeat_at, started_at, finished_at, error, best_valid_acc, best_epoch, seconds, data_key
FROM jobs_before_0004;

DROP TABLE jobs_before_0004;
