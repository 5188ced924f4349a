-- up.sql beside this file, on PostgreSQL: the status CHECK is replaced in place.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted', 'pruned', 'waiting'));
