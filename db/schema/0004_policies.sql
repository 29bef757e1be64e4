-- Scheduled policies (issue 12): which policy made a backup, the schedule
-- slots already handled (so a restart catches up once, not per slot), and
-- the run history's kind, reason and errors.
ALTER TABLE backups ADD COLUMN policy TEXT;
ALTER TABLE policies ADD COLUMN last_slot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE policies ADD COLUMN verify_last_slot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE policy_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'backup';
ALTER TABLE policy_runs ADD COLUMN reason TEXT;
ALTER TABLE policy_runs ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
CREATE INDEX policy_runs_policy ON policy_runs(policy, id);
