-- ASHA's promotions (issue 12): a trial that ASHA stops at a rung now
-- waits there (status 'waiting', its epochs, checkpoint, rung and reason
-- kept) rather than end: when later trials put it in the top 1/eta of that
-- rung it is promoted (running again from its last epoch); when the sweep
-- has nothing left to run, a trial still waiting becomes 'pruned'.
--
-- SQLite cannot alter a CHECK constraint, so `jobs` is rebuilt with every
-- row, as in 0004 (it has no index, trigger or view of its own); the foreign
-- keys that reference it are checked at COMMIT (deferred).
PRAGMA defer_foreign_keys = ON;

CREATE TABLE jobs_before_0006 AS SELECT * FROM jobs;
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
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'pruned', 'waiting')),
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
    prune_epoch   INTEGER,                 -- the last epoch a pruned or waiting job ran
    prune_rung    INTEGER,                 -- ASHA: the rung (0, 1, ...) it stopped at
    prune_reason  TEXT,                    -- why, in words, with the numbers compared
    same_as       TEXT                     -- the job trained for it (its epochs are that job's)
) STRICT;

INSERT INTO jobs (id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts, lease_owner,
                  lease_expires, heartbeat_at, started_at, finished_at, error, best_valid_acc, best_epoch, seconds,
                  data_key, prune_epoch, prune_rung, prune_reason, same_as)
SELECT id, config_json, batch_size, workers, lr, momentum, epochs, status, attempts, lease_owner,
       lease_expires, heartbeat_at, started_at, finished_at, error, best_valid_acc, best_epoch, seconds, data_key,
       prune_epoch, prune_rung, prune_reason, same_as
FROM jobs_before_0006;

DROP TABLE jobs_before_0006;
