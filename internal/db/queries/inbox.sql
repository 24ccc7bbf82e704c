-- name: ClaimInbox :execrows
INSERT INTO eventbus_inbox (consumer_group, event_id) VALUES (sqlc.arg(consumer_group), sqlc.arg(event_id))
ON CONFLICT DO NOTHING;

-- name: DeleteInboxBefore :execrows
-- DeleteInboxBefore deletes one consumer group's rows received before the
-- cutoff; other groups keep theirs (each cleans with its own retention).
DELETE FROM eventbus_inbox WHERE consumer_group = sqlc.arg(consumer_group) AND received_at < sqlc.arg(before);

-- name: CountInbox :one
SELECT count(*) FROM eventbus_inbox;
