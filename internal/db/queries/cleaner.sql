-- name: DeleteSettledHeads :execrows
-- Deletes up to max_rows aggregate heads below every running transaction
-- id: they cannot raise any producer's order key any more (see
-- eventbus_order_key). Heads a producer has locked are skipped, so the
-- cleaner never waits for a producer's transaction; and the condition is
-- repeated on the deleted row itself, so that a head a producer moved
-- forward meanwhile is rechecked (READ COMMITTED) and kept.
DELETE FROM eventbus_heads h
WHERE h.aggregate_id IN (
        SELECT s.aggregate_id FROM eventbus_heads s
        WHERE s.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
        LIMIT sqlc.arg(max_rows)::integer
        FOR UPDATE SKIP LOCKED)
    AND h.transaction_id < pg_snapshot_xmin(pg_current_snapshot());

-- name: DeleteStaleAttempts :execrows
-- Deletes up to max_rows publish-attempt counts whose last failure is older
-- than older_than, skipping those a relay is updating.
DELETE FROM eventbus_attempts a
WHERE (a.lane, a.message_uuid) IN (
        SELECT s.lane, s.message_uuid FROM eventbus_attempts s
        WHERE s.last_failed_at < now() - sqlc.arg(older_than)::interval
        LIMIT sqlc.arg(max_rows)::integer
        FOR UPDATE SKIP LOCKED)
    AND a.last_failed_at < now() - sqlc.arg(older_than)::interval;

-- name: TryCleanerLock :one
-- Takes the session-level advisory lock that lets one outbox cleaner of
-- the database run at a time (false if another session holds it), and
-- returns the session's statement_timeout.
SELECT pg_try_advisory_lock(sqlc.arg(key)::bigint) AS locked,
    current_setting('statement_timeout') AS statement_timeout;

-- name: SetStatementTimeout :exec
-- Sets the session's statement_timeout.
SELECT set_config('statement_timeout', sqlc.arg(statement_timeout)::text, false);

-- name: CleanerUnlock :one
-- Releases the cleaner's lock and restores the session's
-- statement_timeout.
SELECT pg_advisory_unlock(sqlc.arg(key)::bigint) AS unlocked,
    set_config('statement_timeout', sqlc.arg(statement_timeout)::text, false) AS statement_timeout;
