-- Upload intents: written before an upload is sent, resolved when its outcome is known.
-- After a crash, an event whose upload was in flight is matched against last_uploadings
-- instead of being sent a second time.
CREATE TABLE upload_intents (
    intent_id    TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    records      INTEGER NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    resolved     BOOLEAN NOT NULL DEFAULT FALSE,
    uploading_id TEXT
);

CREATE INDEX upload_intents_started_at ON upload_intents (started_at);

CREATE TABLE inflight_events (
    event_id  TEXT PRIMARY KEY,
    intent_id TEXT NOT NULL
);
