-- name: LaneRelayProgress :many
-- (ReadStatus before it scaled, kept as the bench's baseline.) Per lane
-- relayed by a consumer group: the offset it acknowledged last and,
-- while that row is still stored, how long ago it was written (-1 once
-- the cleaner deleted it).
SELECT
    substr(f.consumer_group, length(sqlc.arg(consumer_group)::text) + 2)::integer AS lane,
    coalesce(f.offset_acked, 0)::bigint AS offset_acked,
    coalesce(extract(epoch FROM now() - o.created_at), -1)::float8 AS last_relayed_age_seconds
FROM eventbus_offsets f
LEFT JOIN eventbus_outbox o
    ON o.transaction_id = f.last_processed_transaction_id AND o."offset" = f.offset_acked
WHERE starts_with(f.consumer_group, sqlc.arg(consumer_group)::text || '/')
  AND substr(f.consumer_group, length(sqlc.arg(consumer_group)::text) + 2) ~ '^[0-9]+$'
ORDER BY 1;

-- name: InboxByGroup :many
-- Inbox rows per consumer group.
SELECT consumer_group, count(*)::bigint AS rows
FROM eventbus_inbox
GROUP BY consumer_group
ORDER BY consumer_group;

-- name: SnapshotXmin :one
-- The oldest transaction still running: every transaction below it has
-- committed or rolled back, so no outbox row below it can appear later.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin;

-- name: TailOutboxAfter :many
-- Outbox rows after a position (transaction_id, offset), in the order the
-- relay reads them.
SELECT
    "offset"::bigint AS "offset",
    transaction_id::text::bigint AS transaction_id,
    uuid, created_at, payload, metadata,
    lane::integer AS lane
FROM eventbus_outbox
WHERE (transaction_id, "offset") > (sqlc.arg(after_transaction_id)::bigint::text::xid8, sqlc.arg(after_offset)::bigint)
ORDER BY transaction_id, "offset"
LIMIT sqlc.arg(max_rows);

-- name: TailOutboxLast :many
-- The last max_rows outbox rows, newest first.
SELECT
    "offset"::bigint AS "offset",
    transaction_id::text::bigint AS transaction_id,
    uuid, created_at, payload, metadata,
    lane::integer AS lane
FROM eventbus_outbox
ORDER BY transaction_id DESC, "offset" DESC
LIMIT sqlc.arg(max_rows);

-- name: InboxGroups :many
-- The consumer groups with inbox rows, in order, one index descent per
-- group (a loose index scan of the primary key) rather than a scan of the
-- rows.
WITH RECURSIVE g (consumer_group) AS (
    (SELECT i.consumer_group FROM eventbus_inbox i ORDER BY i.consumer_group LIMIT 1)
    UNION ALL
    SELECT (SELECT i.consumer_group FROM eventbus_inbox i
            WHERE i.consumer_group > g.consumer_group ORDER BY i.consumer_group LIMIT 1)
    FROM g WHERE g.consumer_group IS NOT NULL
)
SELECT g.consumer_group::text AS consumer_group FROM g WHERE g.consumer_group IS NOT NULL;
