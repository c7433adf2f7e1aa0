-- What a parked event waits for: its client's identity ('identity', every event parked before
-- this migration) or its deal's creation time ('creation': a payment that came first, issue 15).
ALTER TABLE parked ADD COLUMN waits_for TEXT NOT NULL DEFAULT 'identity';
