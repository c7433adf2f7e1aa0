-- When the lead a client's consent comes from happened: a lead older than that, handled late,
-- no longer overrides the consent. NULL: not known (rows from before this migration, or never
-- stated), so the next lead that states consent sets it.
ALTER TABLE identities ADD COLUMN consent_at timestamptz;
