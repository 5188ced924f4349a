-- up.sql beside this file, on PostgreSQL: the status CHECK is replaced in
-- place (PostgreSQL alters constraints; SQLite had to rebuild the table).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'pruned'));
ALTER TABLE jobs ADD COLUMN prune_epoch BIGINT;
ALTER TABLE jobs ADD COLUMN prune_rung BIGINT;
ALTER TABLE jobs ADD COLUMN prune_reason TEXT;
ALTER TABLE jobs ADD COLUMN same_as TEXT;
