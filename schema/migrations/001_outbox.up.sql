-- The outbox: one table per lane, all inheriting eventbus_outbox, in
-- watermill-sql v3's PostgreSQL layout (offset, uuid, created_at, payload,
-- metadata, transaction_id) so that Watermill's SQL subscriber reads each
-- lane table as a topic. The parent table is never written to directly; it
-- lets queries read every lane at once. "lane" is filled by each lane
-- table's column default, so Watermill's INSERT need not know about it.
CREATE TABLE IF NOT EXISTS eventbus_outbox (
    "offset" BIGSERIAL,
    "uuid" VARCHAR(36) NOT NULL,
    "created_at" TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "payload" JSON DEFAULT NULL,
    "metadata" JSON DEFAULT NULL,
    "transaction_id" xid8 NOT NULL,
    "lane" INTEGER NOT NULL DEFAULT -1
);

-- Consumer offsets of every lane, in watermill-sql v3's layout. The
-- consumer group is "<group>/<lane>".
CREATE TABLE IF NOT EXISTS eventbus_offsets (
    consumer_group VARCHAR(255) NOT NULL,
    offset_acked BIGINT,
    last_processed_transaction_id xid8 NOT NULL,
    PRIMARY KEY (consumer_group)
);

-- Settings shared by producers and relays: the number of lanes, and
-- whether committing producers NOTIFY the relays (see eventbus_notify).
CREATE TABLE IF NOT EXISTS eventbus_settings (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    lanes INTEGER NOT NULL CHECK (lanes BETWEEN 1 AND 256),
    notify BOOLEAN NOT NULL DEFAULT TRUE
);

-- Wakes relays on commit: one notification per lane per transaction
-- (PostgreSQL folds identical notifications of one transaction).
CREATE OR REPLACE FUNCTION eventbus_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventbus_outbox', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- Creates lane tables 0..n-1 (idempotent), gives them the NOTIFY trigger
-- or removes it, and records both settings.
CREATE OR REPLACE FUNCTION eventbus_ensure_lanes(n INTEGER, notify BOOLEAN) RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    i INTEGER;
    t TEXT;
BEGIN
    FOR i IN 0..n - 1 LOOP
        t := format('watermill_eventbus_lane_%s', i);
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I (PRIMARY KEY (transaction_id, "offset")) INHERITS (eventbus_outbox)', t);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN lane SET DEFAULT %s', t, i);
        -- Lets the planner skip the other lanes' tables in queries on
        -- eventbus_outbox that name a lane (constraint exclusion).
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = t::regclass AND conname = t || '_lane') THEN
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (lane = %s)', t, t || '_lane', i);
        END IF;
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I ((metadata->>%L))', t || '_aggregate', t, 'aggregate_id');
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at)', t || '_created', t);
        IF notify THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER eventbus_notify AFTER INSERT ON %I FOR EACH STATEMENT EXECUTE FUNCTION eventbus_notify()', t);
        ELSE
            EXECUTE format('DROP TRIGGER IF EXISTS eventbus_notify ON %I', t);
        END IF;
    END LOOP;
    INSERT INTO eventbus_settings (singleton, lanes, notify) VALUES (TRUE, n, notify)
    ON CONFLICT (singleton) DO UPDATE SET lanes = excluded.lanes, notify = excluded.notify;
    RETURN n;
END;
$$;

-- Events that could never be published, with why.
CREATE TABLE IF NOT EXISTS eventbus_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    lane INTEGER NOT NULL,
    message_uuid TEXT NOT NULL,
    event_name TEXT NOT NULL DEFAULT '',
    aggregate_id TEXT NOT NULL DEFAULT '',
    payload BYTEA NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL,
    dead_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at TIMESTAMPTZ,
    UNIQUE (lane, message_uuid)
);

-- Inbox of idempotent consumers: one row per (consumer group, event).
CREATE TABLE IF NOT EXISTS eventbus_inbox (
    consumer_group TEXT NOT NULL,
    event_id UUID NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS eventbus_inbox_received_at ON eventbus_inbox (received_at);
