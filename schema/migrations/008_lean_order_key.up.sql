-- A cheaper order key (see 005_order_key for what it is).
--
-- eventbus_heads becomes UNLOGGED: its writes skip the write-ahead log,
-- and PostgreSQL empties it after a crash (and on a promoted standby).
-- That loses nothing. A head only matters to a transaction that is still
-- running, as the lower bound of its order key; after a crash no
-- transaction of before is running, and every transaction id given out
-- from then on is above every head that was lost (heads are transaction
-- ids of transactions that wrote WAL, and PostgreSQL never gives out an id
-- again). The cleaner prunes heads below the oldest running transaction
-- for the same reason.
ALTER TABLE eventbus_heads SET UNLOGGED;

-- Most transactions publish events of one aggregate: one upsert that
-- returns the new head is its whole order key, instead of an upsert, a
-- read of the largest head and an update. Several aggregates take the
-- path of 005 unchanged.
CREATE OR REPLACE FUNCTION eventbus_order_key(aggregates TEXT[], lanes INTEGER) RETURNS xid8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    own xid8 := pg_current_xact_id();
    k xid8;
BEGIN
    IF (SELECT s.lanes FROM eventbus_settings s) IS DISTINCT FROM eventbus_order_key.lanes THEN
        RAISE EXCEPTION 'eventbus: the outbox no longer has % lanes', eventbus_order_key.lanes
            USING ERRCODE = 'EB001';
    END IF;
    IF cardinality(aggregates) = 1 THEN
        INSERT INTO eventbus_heads AS h (aggregate_id, transaction_id) VALUES (aggregates[1], own)
        ON CONFLICT (aggregate_id) DO UPDATE
            SET transaction_id = greatest(h.transaction_id, excluded.transaction_id)
        RETURNING h.transaction_id INTO k;
    ELSE
        -- Sorted, so that producers lock heads in one order and do not
        -- deadlock.
        INSERT INTO eventbus_heads AS h (aggregate_id, transaction_id)
        SELECT a, own FROM unnest(aggregates) AS a GROUP BY a ORDER BY a
        ON CONFLICT (aggregate_id) DO UPDATE
            SET transaction_id = greatest(h.transaction_id, excluded.transaction_id);
        SELECT max(h.transaction_id) INTO k FROM eventbus_heads h WHERE h.aggregate_id = ANY (aggregates);
        UPDATE eventbus_heads h SET transaction_id = k
        WHERE h.aggregate_id = ANY (aggregates) AND h.transaction_id < k;
    END IF;
    PERFORM set_config('eventbus.order_key', k::text, true);
    RETURN k;
END;
$$;
