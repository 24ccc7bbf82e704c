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
