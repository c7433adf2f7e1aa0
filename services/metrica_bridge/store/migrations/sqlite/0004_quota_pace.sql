-- The pace of the daily budget, shared by every process on the store: when the next paced
-- request of the quota day is due (Unix seconds; 0 before the first).
ALTER TABLE quota ADD COLUMN next_at REAL NOT NULL DEFAULT 0;
