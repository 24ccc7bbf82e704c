-- The order key of a producer's events: the position (transaction_id
-- column) its rows take in their lane, which relays read in
-- (transaction_id, "offset") order.
--
-- PostgreSQL gives a transaction its id at its first write, not at
-- commit, so a transaction that wrote early but publishes late would sort
-- before an aggregate's events committed in between. So a publishing
-- transaction locks its aggregates' heads (waiting for an open transaction
-- that published one of them), takes as order key the largest of its own
-- id and their heads, and records that key as their new head. Its rows
-- then sort after every committed event of its aggregates: an aggregate's
-- events are relayed in commit order, whatever the interleaving.
--
-- The key is never below the transaction's own id, so its rows stay
-- invisible to relays (which read only rows below the oldest running
-- transaction id) until it has ended, and a relay never reads past a
-- position a running transaction may still write to.
--
-- Refuses with SQLSTATE EB001 when the number of lanes is not `lanes`
-- (the producer hashed with a stale count); the read lock on
-- eventbus_settings makes Migrate wait for this transaction before it
-- adds lanes. The key is also left in the transaction-local setting
-- eventbus.order_key for the INSERTs that follow.
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
    -- Sorted, so that producers lock heads in one order and do not deadlock.
    INSERT INTO eventbus_heads AS h (aggregate_id, transaction_id)
    SELECT a, own FROM unnest(aggregates) AS a GROUP BY a ORDER BY a
    ON CONFLICT (aggregate_id) DO UPDATE
        SET transaction_id = greatest(h.transaction_id, excluded.transaction_id);
    SELECT max(h.transaction_id) INTO k FROM eventbus_heads h WHERE h.aggregate_id = ANY (aggregates);
    UPDATE eventbus_heads h SET transaction_id = k
    WHERE h.aggregate_id = ANY (aggregates) AND h.transaction_id < k;
    PERFORM set_config('eventbus.order_key', k::text, true);
    RETURN k;
END;
$$;
