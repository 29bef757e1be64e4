-- Verification reports (issue 11): the restore points that depend on a
-- damaged link when the report was filed (JSON array of backup ids).
ALTER TABLE reports ADD COLUMN affected TEXT NOT NULL DEFAULT '[]';
