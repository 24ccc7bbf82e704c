-- name: ClaimInbox :execrows
INSERT INTO eventbus_inbox (consumer_group, event_id) VALUES (sqlc.arg(consumer_group), sqlc.arg(event_id))
ON CONFLICT DO NOTHING;

-- name: DeleteInboxBefore :execrows
DELETE FROM eventbus_inbox WHERE received_at < sqlc.arg(before);

-- name: CountInbox :one
SELECT count(*) FROM eventbus_inbox;
