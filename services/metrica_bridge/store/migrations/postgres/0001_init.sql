-- metrica-bridge state store, PostgreSQL. Ids that the park orders by use COLLATE "C" so the
-- order is bytewise, the same as SQLite's, whatever the database's default collation.

CREATE TABLE ledger (
    event_id    text PRIMARY KEY,
    topic       text NOT NULL,
    outcome     text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    upload_id   text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ledger_recorded_at ON ledger (recorded_at);

CREATE TABLE identities (
    client_uniq_id       text PRIMARY KEY,
    client_ids           text[] NOT NULL DEFAULT '{}',
    phones               text[] NOT NULL DEFAULT '{}',
    emails               text[] NOT NULL DEFAULT '{}',
    name                 text,
    -- NULL: no lead ever stated it, which counts as consent (the Avro default is true);
    -- nullable so the upsert can tell "unchanged" from "false"
    consent              boolean,
    -- Identity.has_identifier(), so the park can join on it
    has_identifier       boolean GENERATED ALWAYS AS (
        cardinality(client_ids) > 0
        OR (COALESCE(consent, true) AND (cardinality(phones) > 0 OR cardinality(emails) > 0))
    ) STORED,
    uploaded_fingerprint text,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    deal_id         text PRIMARY KEY,
    client_uniq_id  text NOT NULL,
    created_at      timestamptz,
    applied_at      timestamptz,
    applied_version bigint,
    status          text,
    revenue         numeric(18, 2),
    cost            numeric(18, 2),
    currency        text,
    deal_amount     numeric(18, 2),
    payments        jsonb NOT NULL DEFAULT '{}'::jsonb,
    sent            boolean NOT NULL DEFAULT false
);

CREATE TABLE order_claims (
    deal_id    text PRIMARY KEY,
    owner      text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX order_claims_owner ON order_claims (owner, expires_at);

CREATE TABLE parked (
    event_id         text PRIMARY KEY,
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    record_key       bytea,
    record_value     bytea NOT NULL,
    headers          jsonb NOT NULL DEFAULT '[]'::jsonb,
    client_uniq_id   text NOT NULL,
    deal_id          text COLLATE "C" NOT NULL,
    occurred_at      timestamptz NOT NULL,
    version          bigint,
    parked_at        timestamptz NOT NULL,
    timestamp_ms     bigint,
    lease_owner      text,
    lease_expires_at timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE INDEX parked_deal ON parked (deal_id, occurred_at, version NULLS FIRST);
CREATE INDEX parked_client ON parked (client_uniq_id);
CREATE INDEX parked_topic_parked_at ON parked (topic, parked_at);

CREATE TABLE quota (
    day  text PRIMARY KEY,
    used bigint NOT NULL
);
