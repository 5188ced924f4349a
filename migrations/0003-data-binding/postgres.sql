-- up.sql beside this file, on PostgreSQL.
ALTER TABLE jobs ADD COLUMN data_key TEXT;
ALTER TABLE sweeps ADD COLUMN data_key TEXT;

CREATE TABLE data_manifests (
    data_key    TEXT PRIMARY KEY,
    manifest    TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
);
