-- Relay groups: every relay consumer group registers here when it first
-- runs. The cleaner deletes an outbox row only once every registered group
-- has acknowledged it, so a second group (a fan-out to another broker, a
-- broker migration) never loses rows to the first group's cleaner.
-- `eventbus groups drop` retires a group.
CREATE TABLE IF NOT EXISTS eventbus_relay_groups (
    consumer_group TEXT PRIMARY KEY,
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Publish attempts of outbox rows that failed at least once, kept in the
-- database so that the count survives abandoned batches and relay restarts:
-- a row that can never be published reaches MaxAttempts and is
-- dead-lettered whatever happens to the relay process in between.
CREATE TABLE IF NOT EXISTS eventbus_attempts (
    lane INTEGER NOT NULL,
    message_uuid TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (lane, message_uuid)
);

-- The order key (see eventbus_order_key, migration 005) of the newest
-- events of each aggregate. A head below every running transaction id
-- cannot raise any producer's key any more, and the cleaner deletes it.
CREATE TABLE IF NOT EXISTS eventbus_heads (
    aggregate_id TEXT PRIMARY KEY,
    transaction_id xid8 NOT NULL
);

-- Lane ownership for one batch: returns the consumer group's offsets row
-- if this transaction gets the group's advisory lock, and nothing (the
-- relay skips the lane for now) if another relay process holds it. The lock
-- is transaction-scoped and assigns no transaction id, so a batch being
-- published never holds back what other readers of the cluster see. The
-- function is VOLATILE: under READ COMMITTED its query takes a snapshot
-- after the lock is taken, so it sees the offsets the previous owner
-- committed.
CREATE OR REPLACE FUNCTION eventbus_claim_lane(grp TEXT)
RETURNS TABLE (offset_acked BIGINT, last_processed_transaction_id xid8)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(1701147252, hashtext(grp)) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT o.offset_acked, o.last_processed_transaction_id
        FROM eventbus_offsets o WHERE o.consumer_group = grp;
END;
$$;
