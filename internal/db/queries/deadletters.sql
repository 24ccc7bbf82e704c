-- name: InsertDeadLetter :one
INSERT INTO eventbus_dead_letters (
    lane, message_uuid, event_name, aggregate_id, payload, metadata, error, attempts, first_failed_at
) VALUES (
    sqlc.arg(lane), sqlc.arg(message_uuid), sqlc.arg(event_name), sqlc.arg(aggregate_id),
    sqlc.arg(payload), sqlc.arg(metadata), sqlc.arg(error), sqlc.arg(attempts), sqlc.arg(first_failed_at)
)
ON CONFLICT (lane, message_uuid) DO UPDATE SET
    payload = excluded.payload,
    metadata = excluded.metadata,
    error = excluded.error,
    attempts = eventbus_dead_letters.attempts + excluded.attempts,
    dead_at = now(),
    replayed_at = NULL
RETURNING id;

-- name: ListDeadLetters :many
SELECT id, lane, message_uuid, event_name, aggregate_id, error, attempts, first_failed_at, dead_at, replayed_at
FROM eventbus_dead_letters
WHERE (sqlc.arg(include_replayed)::boolean OR replayed_at IS NULL)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: GetDeadLetter :one
SELECT * FROM eventbus_dead_letters WHERE id = sqlc.arg(id);

-- name: MarkDeadLetterReplayed :exec
UPDATE eventbus_dead_letters SET replayed_at = now() WHERE id = sqlc.arg(id);

-- name: UpdateDeadLetterPayload :execrows
UPDATE eventbus_dead_letters SET payload = sqlc.arg(payload) WHERE id = sqlc.arg(id);

-- name: DeleteDeadLetter :execrows
DELETE FROM eventbus_dead_letters WHERE id = sqlc.arg(id);

-- name: CountDeadLetters :one
SELECT count(*) FROM eventbus_dead_letters WHERE replayed_at IS NULL;

-- name: LockLaneGroup :exec
-- Waits for the advisory lock that eventbus_claim_lane takes for a lane's
-- relay consumer group ("<group>/<lane>"), so that a relay's batch in
-- flight on the lane ends first; held until the transaction ends.
SELECT pg_advisory_xact_lock(1701147252, hashtext(sqlc.arg(consumer_group)::text));

-- name: LaneGroupOffsetsForUpdate :one
-- A lane's relay consumer group's position, locked against concurrent
-- writers (a relay that reads it FOR UPDATE, as watermill-sql's own
-- offsets adapter does, finishes its batch first).
SELECT coalesce(offset_acked, 0)::bigint AS offset_acked,
    last_processed_transaction_id::text::bigint AS transaction_id
FROM eventbus_offsets
WHERE consumer_group = sqlc.arg(consumer_group)
FOR UPDATE;

-- name: NextLaneRow :one
-- The row a relay reads next in a lane after a position: in (transaction_id,
-- offset) order, among rows of transactions older than every running one.
SELECT
    "offset"::bigint AS "offset",
    transaction_id::text::bigint AS transaction_id,
    uuid, payload, metadata
FROM eventbus_outbox
WHERE lane = sqlc.arg(lane)::integer
  AND (transaction_id, "offset") > (sqlc.arg(after_transaction_id)::bigint::text::xid8, sqlc.arg(after_offset)::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, "offset"
LIMIT 1;

-- name: TakeAttempts :many
-- Removes and returns the publish attempts recorded for an outbox row.
DELETE FROM eventbus_attempts
WHERE lane = sqlc.arg(lane) AND message_uuid = sqlc.arg(message_uuid)
RETURNING attempts, first_failed_at, last_error;

-- name: AckLaneRow :exec
-- Moves a lane's relay consumer group past a row, forward only, as the
-- relay's offsets adapter acknowledges one.
INSERT INTO eventbus_offsets AS o (consumer_group, offset_acked, last_processed_transaction_id)
VALUES (sqlc.arg(consumer_group), sqlc.arg(offset_acked)::bigint, sqlc.arg(transaction_id)::bigint::text::xid8)
ON CONFLICT (consumer_group) DO UPDATE SET
    offset_acked = excluded.offset_acked,
    last_processed_transaction_id = excluded.last_processed_transaction_id
WHERE (o.last_processed_transaction_id, o.offset_acked) < (excluded.last_processed_transaction_id, excluded.offset_acked);
