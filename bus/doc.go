// Package bus is the generic runtime of eventbus: a transactional outbox
// on PostgreSQL (pgx), a relay that moves the outbox to any Watermill
// publisher, and typed consumers with an inbox. It knows event types only
// through a Registry, which generated code provides (gen.Registry() for the
// EduPulse events); it never imports generated code.
//
// # Publishing
//
// An Outbox writes events in the caller's pgx transaction, so they commit
// or roll back with the business rows:
//
//	outbox, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
//	err = outbox.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
//		// write business rows with tx ...
//		return []bus.Event{gen.NewPulseCreated(id, author, title, now)}, nil
//	})
//
// Rows use watermill-sql v3's PostgreSQL layout and Watermill's forwarder
// envelope, one table per lane (see package schema).
//
// # Routing
//
// A Routing gives each event type its broker topic: by event name (the
// default), by aggregate type, one topic, or a function of your own. The
// Outbox publishes with it and a Consumer subscribes to the topics it gives
// the registry's types, so pass the same value to both (OutboxConfig.Routing,
// ConsumerConfig.Routing), or give the consumer the Outbox.
//
// # Relaying
//
// A Relay reads every lane with Watermill's SQL subscriber and publishes
// with Watermill's forwarder: at least once, in transaction-id order per
// lane, which Publish makes each aggregate's commit order (its order key),
// woken by NOTIFY on commit, retrying outages with backoff and
// dead-lettering events that can never be published (DeadLetters) after
// MaxAttempts, counted in the database. A lane is claimed per batch with an
// advisory lock, so lanes never wait for each other and several relay
// processes can run for failover.
//
// # Consuming
//
// A Consumer decodes messages into typed events and calls handlers
// registered with On (at least once), OnTx (in a transaction that records
// the event in the inbox: exactly-once effect) or OnAny (for the generated
// exhaustive dispatcher). Messages that cannot be decoded, and messages
// whose handlers keep failing, are dead-lettered: stored in PostgreSQL when
// the consumer has a Pool (DeadLetters.ListConsumer, ReplayConsumer,
// Consumer.ReplayDeadLetter), else published to a dead-letter topic, and
// acknowledged only once stored; events without a handler follow
// ConsumerConfig.UnknownVersion. Attempts that fail because
// the database is unreachable (IsOutage) are retried until it is back,
// never dead-lettered.
package bus
