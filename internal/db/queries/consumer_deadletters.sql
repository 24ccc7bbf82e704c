-- name: InsertConsumerDeadLetter :one
-- Stores a message a consumer gave up on. A message of the group that was
-- dead-lettered before (and replayed, or redelivered meanwhile) adds its
-- attempts to the row and keeps its first failure.
INSERT INTO eventbus_consumer_dead_letters (
    consumer_group, topic, message_uuid, event_name, event_version, aggregate_id,
    payload, metadata, reason, attempts, first_failed_at
) VALUES (
    sqlc.arg(consumer_group), sqlc.arg(topic), sqlc.arg(message_uuid), sqlc.arg(event_name),
    sqlc.arg(event_version), sqlc.arg(aggregate_id), sqlc.arg(payload), sqlc.arg(metadata),
    sqlc.arg(reason), sqlc.arg(attempts), sqlc.arg(first_failed_at)
)
ON CONFLICT (consumer_group, message_uuid) DO UPDATE SET
    topic = excluded.topic,
    event_name = excluded.event_name,
    event_version = excluded.event_version,
    aggregate_id = excluded.aggregate_id,
    payload = excluded.payload,
    metadata = excluded.metadata,
    reason = excluded.reason,
    attempts = eventbus_consumer_dead_letters.attempts + excluded.attempts,
    first_failed_at = least(eventbus_consumer_dead_letters.first_failed_at, excluded.first_failed_at),
    last_failed_at = now(),
    replayed_at = NULL
RETURNING id;

-- name: RecordConsumerReplayFailure :execrows
-- Counts a failed replay of a consumer dead letter straight to its handlers.
UPDATE eventbus_consumer_dead_letters
SET attempts = attempts + 1, reason = sqlc.arg(reason), last_failed_at = now()
WHERE id = sqlc.arg(id);

-- name: ListConsumerDeadLetters :many
SELECT id, consumer_group, topic, message_uuid, event_name, event_version, aggregate_id,
    reason, attempts, first_failed_at, last_failed_at, replayed_at
FROM eventbus_consumer_dead_letters
WHERE (sqlc.arg(include_replayed)::boolean OR replayed_at IS NULL)
  AND (sqlc.arg(consumer_group)::text = '' OR consumer_group = sqlc.arg(consumer_group)::text)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- name: GetConsumerDeadLetter :one
SELECT * FROM eventbus_consumer_dead_letters WHERE id = sqlc.arg(id);

-- name: MarkConsumerDeadLetterReplayed :execrows
-- Marks a consumer dead letter replayed unless it failed again since it was
-- read (a consumer that dead-letters the message again moves
-- last_failed_at).
UPDATE eventbus_consumer_dead_letters SET replayed_at = now()
WHERE id = sqlc.arg(id) AND last_failed_at = sqlc.arg(last_failed_at);

-- name: UpdateConsumerDeadLetterPayload :execrows
UPDATE eventbus_consumer_dead_letters SET payload = sqlc.arg(payload) WHERE id = sqlc.arg(id);

-- name: DeleteConsumerDeadLetter :execrows
DELETE FROM eventbus_consumer_dead_letters WHERE id = sqlc.arg(id);

-- name: CountConsumerDeadLetters :one
SELECT count(*) FROM eventbus_consumer_dead_letters WHERE replayed_at IS NULL;

-- name: DeadLetterKind :one
-- Which table holds a dead letter: ids are unique across both.
SELECT 'relay'::text AS kind FROM eventbus_dead_letters r WHERE r.id = sqlc.arg(id)::bigint
UNION ALL
SELECT 'consumer'::text FROM eventbus_consumer_dead_letters c WHERE c.id = sqlc.arg(id)::bigint;
