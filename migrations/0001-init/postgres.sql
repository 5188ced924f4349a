-- sweep's first schema on PostgreSQL: up.sql beside this file in PostgreSQL's
-- types (BIGINT for integers, DOUBLE PRECISION for reals, BYTEA for blobs;
-- times are TEXT in SQLite's format, so rows compare equal across backends).
-- Never edit a migration that has landed: add the next one, in both dialects.

CREATE TABLE sweeps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    source      TEXT,
    source_path TEXT,
    created_at  TEXT NOT NULL DEFAULT (to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
    features_key    TEXT,
    features_reused BIGINT,
    split_json  TEXT,
    -- SQLite's implicit rowid: the order of insertion, which reads break ties by.
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    config_json   TEXT NOT NULL,
    batch_size    BIGINT NOT NULL,
    workers       BIGINT NOT NULL,
    lr            DOUBLE PRECISION NOT NULL,
    momentum      DOUBLE PRECISION NOT NULL,
    epochs        BIGINT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted')),
    attempts      BIGINT NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_expires BIGINT,
    heartbeat_at  BIGINT,
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    best_valid_acc DOUBLE PRECISION,
    best_epoch    BIGINT,
    seconds       DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE TABLE sweep_jobs (
    sweep_id  TEXT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    position  BIGINT NOT NULL,
    PRIMARY KEY (sweep_id, job_id)
);
CREATE INDEX sweep_jobs_by_job ON sweep_jobs(job_id);

CREATE TABLE epochs (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    epoch       BIGINT NOT NULL CHECK (epoch >= 1),
    train_loss  DOUBLE PRECISION NOT NULL,
    train_acc   DOUBLE PRECISION NOT NULL,
    valid_loss  DOUBLE PRECISION NOT NULL,
    valid_acc   DOUBLE PRECISION NOT NULL,
    lr          DOUBLE PRECISION NOT NULL,
    seconds     DOUBLE PRECISION NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
    PRIMARY KEY (job_id, epoch)
);

CREATE TABLE checkpoints (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    kind    TEXT NOT NULL CHECK (kind IN ('last', 'best')),
    epoch   BIGINT NOT NULL,
    state   BYTEA NOT NULL,
    PRIMARY KEY (job_id, kind)
);
