-- name: LaneStatus :many
-- Per lane: events not yet acknowledged by the relay's consumer group, the
-- creation time of the oldest of them, and the last acknowledged offset.
SELECT
    o.lane::integer AS lane,
    count(*) FILTER (WHERE f.consumer_group IS NULL
        OR o.transaction_id > f.last_processed_transaction_id
        OR (o.transaction_id = f.last_processed_transaction_id AND o."offset" > f.offset_acked))::bigint AS backlog,
    min(o.created_at) FILTER (WHERE f.consumer_group IS NULL
        OR o.transaction_id > f.last_processed_transaction_id
        OR (o.transaction_id = f.last_processed_transaction_id AND o."offset" > f.offset_acked))::timestamp AS oldest_pending,
    max(o.created_at)::timestamp AS newest
FROM eventbus_outbox o
LEFT JOIN eventbus_offsets f ON f.consumer_group = sqlc.arg(consumer_group)::text || '/' || o.lane::text
GROUP BY o.lane
ORDER BY o.lane;

-- name: DeleteRelayedBefore :execrows
-- Deletes outbox rows of one lane created before a time that the relay's
-- consumer group has acknowledged.
DELETE FROM eventbus_outbox o
USING eventbus_offsets f
WHERE o.lane = sqlc.arg(lane)::integer
  AND f.consumer_group = sqlc.arg(consumer_group)::text || '/' || sqlc.arg(lane)::integer::text
  AND o.created_at < sqlc.arg(before)
  AND (o.transaction_id < f.last_processed_transaction_id
       OR (o.transaction_id = f.last_processed_transaction_id AND o."offset" <= f.offset_acked));

-- name: TailOutbox :many
SELECT "offset", uuid, created_at, payload, metadata, lane::integer AS lane FROM eventbus_outbox
WHERE "offset" > sqlc.arg(after_offset)
ORDER BY "offset"
LIMIT sqlc.arg(max_rows);
