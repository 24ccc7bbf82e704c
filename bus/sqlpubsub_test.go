package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// TestRelayToSQLPubSub relays to watermill-sql itself as the broker, in
// another database, and reads the events back with a stock watermill-sql
// subscriber: the messages keep their UUIDs and metadata end to end.
func TestRelayToSQLPubSub(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	brokerDB := stdlib.OpenDBFromPool(pgtest.NewPool(t))
	t.Cleanup(func() { brokerDB.Close() }) // after the relay stopped (cleanups run last in, first out)
	logger := watermill.NopLogger{}
	pub, err := wsql.NewPublisher(brokerDB, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}, AutoInitializeSchema: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := wsql.NewSubscriber(brokerDB, wsql.SubscriberConfig{ConsumerGroup: "test", SchemaAdapter: wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{}, InitializeSchema: true, PollInterval: 50 * time.Millisecond}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// Subscribe first: it creates the topic tables, which the relay's
	// publisher would otherwise race to create.
	subCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	created, err := sub.Subscribe(subCtx, gen.PulseCreated{}.EventName())
	if err != nil {
		t.Fatal(err)
	}
	answered, err := sub.Subscribe(subCtx, gen.PulseAnswered{}.EventName())
	if err != nil {
		t.Fatal(err)
	}

	pulse := uuid.New()
	events := []bus.Event{pulseCreated(pulse, "sql"), pulseAnswered(pulse), pulseAnswered(pulse)}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events, nil }); err != nil {
		t.Fatal(err)
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: pub})

	var got []string
	for len(got) < len(events) {
		var ch = created
		if len(got) > 0 {
			ch = answered
		}
		select {
		case m := <-ch:
			ev, err := gen.Registry().Decode(m)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if ev.Envelope().AggregateID != pulse.String() {
				t.Fatalf("aggregate = %s, want %s", ev.Envelope().AggregateID, pulse)
			}
			got = append(got, m.UUID)
			m.Ack()
		case <-subCtx.Done():
			t.Fatalf("received %d of %d events", len(got), len(events))
		}
	}
	for i, ev := range events {
		if got[i] != ev.Envelope().ID.String() {
			t.Fatalf("event %d = %s, want %s", i, got[i], ev.Envelope().ID)
		}
	}
}
