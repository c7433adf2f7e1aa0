-- Fenced claims (issue 16): every claim gets an epoch never given to another claim, and writes
-- made under a claim check owner and epoch in the same transaction, so a process whose lease
-- lapsed cannot overwrite the new owner's order state nor free its claim.
ALTER TABLE order_claims ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

CREATE SEQUENCE order_claim_epoch;
