-- metrica-bridge state store, SQLite. Times are INTEGER microseconds since the Unix epoch (UTC);
-- money is TEXT holding the exact decimal string; identifier sets are JSON arrays (sorted, unique).

CREATE TABLE ledger (
    event_id    TEXT PRIMARY KEY,
    topic       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    upload_id   TEXT,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX ledger_recorded_at ON ledger (recorded_at);

CREATE TABLE identities (
    client_uniq_id       TEXT PRIMARY KEY,
    client_ids           TEXT NOT NULL DEFAULT '[]',
    phones               TEXT NOT NULL DEFAULT '[]',
    emails               TEXT NOT NULL DEFAULT '[]',
    name                 TEXT,
    consent              INTEGER NOT NULL DEFAULT 1,
    -- Identity.has_identifier(), kept by the writer so the park can join on it
    has_identifier       INTEGER NOT NULL DEFAULT 0,
    uploaded_fingerprint TEXT,
    created_at           INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE orders (
    deal_id         TEXT PRIMARY KEY,
    client_uniq_id  TEXT NOT NULL,
    created_at      INTEGER,
    applied_at      INTEGER,
    applied_version INTEGER,
    status          TEXT,
    revenue         TEXT,
    cost            TEXT,
    currency        TEXT,
    deal_amount     TEXT,
    payments        TEXT NOT NULL DEFAULT '{}',
    sent            INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE order_claims (
    deal_id    TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX order_claims_owner ON order_claims (owner, expires_at);

CREATE TABLE parked (
    event_id         TEXT PRIMARY KEY,
    topic            TEXT NOT NULL,
    kafka_partition  INTEGER NOT NULL,
    kafka_offset     INTEGER NOT NULL,
    record_key       BLOB,
    record_value     BLOB NOT NULL,
    headers          TEXT NOT NULL DEFAULT '[]',
    client_uniq_id   TEXT NOT NULL,
    deal_id          TEXT NOT NULL,
    occurred_at      INTEGER NOT NULL,
    version          INTEGER,
    parked_at        INTEGER NOT NULL,
    timestamp_ms     INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX parked_deal ON parked (deal_id, occurred_at, version);
CREATE INDEX parked_client ON parked (client_uniq_id);
CREATE INDEX parked_topic_parked_at ON parked (topic, parked_at);

CREATE TABLE quota (
    day  TEXT PRIMARY KEY,
    used INTEGER NOT NULL
) WITHOUT ROWID;
