-- name: RecordAttempt :one
-- Counts one failed attempt to publish an outbox row and returns the count
-- so far and when the row first failed.
INSERT INTO eventbus_attempts (lane, message_uuid, attempts, last_error)
VALUES (sqlc.arg(lane), sqlc.arg(message_uuid), 1, sqlc.arg(last_error))
ON CONFLICT (lane, message_uuid) DO UPDATE SET
    attempts = eventbus_attempts.attempts + 1,
    last_failed_at = now(),
    last_error = excluded.last_error
RETURNING attempts, first_failed_at;

-- name: DeleteAttempts :exec
-- Forgets the failed attempts of a row once it was published or
-- dead-lettered.
DELETE FROM eventbus_attempts WHERE lane = sqlc.arg(lane) AND message_uuid = sqlc.arg(message_uuid);
