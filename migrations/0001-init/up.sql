-- sweep's first schema. Never edit a migration that has landed: add the next one.

-- One row per submitted sweep file (its canonical form decides its id).
CREATE TABLE sweeps (
    id          TEXT PRIMARY KEY,          -- hash of the canonical sweep
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,             -- the canonical sweep, as JSON
    source      TEXT,                      -- the sweep file as submitted
    source_path TEXT,                      -- where it was submitted from (absolute)
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    features_key    TEXT,                  -- feature-cache key of the last run
    features_reused INTEGER,               -- 1 when the last run found them cached
    split_json  TEXT                       -- {"train": n, "valid": n, "seed": s, "hash": h}
) STRICT;

-- One row per job. A job id is a hash of its data, model and train settings,
-- so a job can belong to several sweeps (a grid that grows keeps its jobs).
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    config_json   TEXT NOT NULL,           -- resolved train settings
    batch_size    INTEGER NOT NULL,
    workers       INTEGER NOT NULL,
    lr            REAL NOT NULL,
    momentum      REAL NOT NULL,
    epochs        INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,                    -- host:pid:nonce of the runner holding it
    lease_expires INTEGER,                 -- unix milliseconds
    heartbeat_at  INTEGER,                 -- unix milliseconds
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    best_valid_acc REAL,
    best_epoch    INTEGER,
    seconds       REAL NOT NULL DEFAULT 0   -- training seconds, summed over epochs
) STRICT;

CREATE TABLE sweep_jobs (
    sweep_id  TEXT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    position  INTEGER NOT NULL,            -- expansion order within the sweep
    PRIMARY KEY (sweep_id, job_id)
) STRICT;
CREATE INDEX sweep_jobs_by_job ON sweep_jobs(job_id);

-- One row per finished epoch.
CREATE TABLE epochs (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    epoch       INTEGER NOT NULL CHECK (epoch >= 1),
    train_loss  REAL NOT NULL,
    train_acc   REAL NOT NULL,
    valid_loss  REAL NOT NULL,
    valid_acc   REAL NOT NULL,
    lr          REAL NOT NULL,
    seconds     REAL NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (job_id, epoch)
) STRICT;

-- The head's state (safetensors bytes: weights, momentum buffers, counters):
-- kind 'last' to resume from, kind 'best' for the best validation accuracy.
CREATE TABLE checkpoints (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    kind    TEXT NOT NULL CHECK (kind IN ('last', 'best')),
    epoch   INTEGER NOT NULL,
    state   BLOB NOT NULL,
    PRIMARY KEY (job_id, kind)
) STRICT;
