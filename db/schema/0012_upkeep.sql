-- Upkeep and drive lifecycle (issue 17).
-- History retention deletes old rows in small batches: these indexes let each
-- batch find its rows without scanning the whole table.
CREATE INDEX events_time ON events(timestamp);
CREATE INDEX jobs_history ON jobs(finished_at) WHERE status = 'null';
CREATE INDEX reports_time ON reports(created_at);
CREATE INDEX policy_runs_time ON policy_runs(started_at);
-- A drive deleted with ?keep_backups=true: its row stays (the id stays taken, its
-- chains keep their drive) but its image is no longer open.  NULL: attached.
ALTER TABLE drives ADD COLUMN detached_at TEXT;
