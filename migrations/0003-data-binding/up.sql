-- Jobs are bound to the data they train on. A job id hashes the sweep file's
-- settings only; `data_key` hashes what else its results depend on (every
-- image's bytes and class, the weights, the transform, the split). A job bound
-- to one data key never continues under another: the same settings on changed
-- data are other jobs (ids derived from the old id and the new data key), and
-- the old jobs and their epochs stay as they were. NULL: not bound yet (rows
-- written before this migration are bound by their next run).
ALTER TABLE jobs ADD COLUMN data_key TEXT;
ALTER TABLE sweeps ADD COLUMN data_key TEXT;

-- What a data key covered, image by image (JSON), so a changed data set can
-- be described (images added, removed, relabelled) rather than just refused.
CREATE TABLE data_manifests (
    data_key    TEXT PRIMARY KEY,
    manifest    TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
