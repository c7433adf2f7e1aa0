-- When the lead a client's consent comes from happened (microseconds since the epoch, UTC):
-- a lead older than that, handled late, no longer overrides the consent. NULL: not known
-- (rows from before this migration), so the next lead that states consent sets it.
ALTER TABLE identities ADD COLUMN consent_at INTEGER;
