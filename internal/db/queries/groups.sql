-- name: RegisterRelayGroup :exec
-- Registers a relay consumer group, or records that it is still running.
INSERT INTO eventbus_relay_groups (consumer_group) VALUES (sqlc.arg(consumer_group)::text)
ON CONFLICT (consumer_group) DO UPDATE SET last_seen_at = now();

-- name: ListRelayGroups :many
-- The registered relay groups, with the outbox rows each has not
-- acknowledged (every lane; none acknowledged in a lane without an offsets
-- row).
SELECT
    g.consumer_group,
    g.registered_at,
    g.last_seen_at,
    (SELECT count(*)
        FROM eventbus_outbox o
        LEFT JOIN eventbus_offsets f ON f.consumer_group = g.consumer_group || '/' || o.lane::text
        WHERE f.consumer_group IS NULL
           OR (o.transaction_id, o."offset") > (f.last_processed_transaction_id, f.offset_acked))::bigint AS backlog
FROM eventbus_relay_groups g
ORDER BY g.consumer_group;

-- name: LockRelayGroupLanes :exec
-- Waits until no relay of the group is in a batch in any lane, and keeps
-- them out until the transaction ends: the lane-claim lock of
-- eventbus_claim_lane (class 1701147252, claimLockClass in package bus), in
-- lane order.
SELECT pg_advisory_xact_lock(1701147252, hashtext(sqlc.arg(consumer_group)::text || '/' || l::text))
FROM generate_series(0, (SELECT s.lanes - 1 FROM eventbus_settings s)) AS l
ORDER BY l;

-- name: DeleteRelayGroupOffsets :execrows
-- Deletes a relay group's offsets rows, one per lane.
DELETE FROM eventbus_offsets
WHERE starts_with(consumer_group, sqlc.arg(consumer_group)::text || '/')
  AND substr(consumer_group, length(sqlc.arg(consumer_group)::text) + 2) ~ '^[0-9]+$';

-- name: DeleteRelayGroup :one
-- Removes a relay group's registration, and returns when it was last seen.
DELETE FROM eventbus_relay_groups WHERE consumer_group = sqlc.arg(consumer_group)::text
RETURNING last_seen_at;
