-- Consumer dead letters: messages a consumer gave up on (handlers that kept
-- failing, a payload it cannot decode, an event it does not know), kept
-- until an operator replays or discards them (`eventbus dlq`). A consumer
-- with a Pool stores them here by default (ConsumerConfig.DeadLetterStore)
-- before it acknowledges the message, so a dead letter is never only in a
-- broker topic that may drop it.
--
-- Ids come from the relay dead letters' sequence: an id names one dead
-- letter of either kind, and `eventbus dlq show ID` needs no kind.
-- One row per (consumer group, message): a message that fails again after a
-- replay adds its attempts to the row, keeps its first failure and clears
-- replayed_at.
CREATE TABLE IF NOT EXISTS eventbus_consumer_dead_letters (
    id BIGINT PRIMARY KEY DEFAULT nextval('eventbus_dead_letters_id_seq'),
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    message_uuid TEXT NOT NULL,
    event_name TEXT NOT NULL DEFAULT '',
    event_version INTEGER NOT NULL DEFAULT 0,
    aggregate_id TEXT NOT NULL DEFAULT '',
    payload BYTEA NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL,
    last_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at TIMESTAMPTZ,
    UNIQUE (consumer_group, message_uuid)
);
