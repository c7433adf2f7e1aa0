-- An upload whose request got an unclear answer (5xx, timeout) and was sent again may have been
-- applied twice, once with an id nobody recorded: such an intent is "in doubt", and the
-- reconciler counts it as a claimant of any upload in its reach, even after it resolved.
ALTER TABLE upload_intents ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;
