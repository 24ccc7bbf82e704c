-- name: LaneStatus :many
-- Per lane: events not yet acknowledged by the relay's consumer group, the
-- age of the oldest of them, and the rows stored (relayed rows stay until
-- the relay's cleaner removes them).
SELECT
    o.lane::integer AS lane,
    count(*) FILTER (WHERE f.consumer_group IS NULL
        OR o.transaction_id > f.last_processed_transaction_id
        OR (o.transaction_id = f.last_processed_transaction_id AND o."offset" > f.offset_acked))::bigint AS backlog,
    coalesce(extract(epoch FROM now() - min(o.created_at) FILTER (WHERE f.consumer_group IS NULL
        OR o.transaction_id > f.last_processed_transaction_id
        OR (o.transaction_id = f.last_processed_transaction_id AND o."offset" > f.offset_acked))), 0)::float8 AS oldest_pending_age_seconds,
    count(*)::bigint AS stored
FROM eventbus_outbox o
LEFT JOIN eventbus_offsets f ON f.consumer_group = sqlc.arg(consumer_group)::text || '/' || o.lane::text
GROUP BY o.lane
ORDER BY o.lane;
