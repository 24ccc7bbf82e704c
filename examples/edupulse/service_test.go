package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/bustest"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// The service's rows and events commit together, or not at all.
func TestServiceWritesRowsAndEventsTogether(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, appSchema); err != nil {
		t.Fatal(err)
	}
	outbox, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{pool: pool, outbox: outbox, committed: func(bus.Event, time.Time) {}}

	author := uuid.New()
	pulse, err := svc.CreatePulse(ctx, author, "Fractions")
	if err != nil {
		t.Fatal(err)
	}
	created := bustest.RequirePublished[gen.PulseCreated](ctx, t, pool, gen.Registry(),
		&bustest.RequireOpts{AggregateID: pulse.String(), Count: 1})
	if created[0].Title != "Fractions" || created[0].AuthorID != author {
		t.Fatalf("published %+v", created[0].PulseCreated)
	}
	if n := count(t, pool, "SELECT count(*) FROM pulses WHERE id = $1", pulse); n != 1 {
		t.Fatalf("pulse rows = %d, want 1", n)
	}

	// An answer to a pulse that does not exist violates the foreign key: the
	// transaction rolls back, and its event with it.
	missing := uuid.New()
	if err := svc.AnswerPulse(ctx, missing, uuid.New(), true); err == nil {
		t.Fatal("answering a missing pulse succeeded")
	}
	bustest.RequireNotPublished[gen.PulseAnsweredV2](ctx, t, pool, gen.Registry(), missing.String())
	if n := count(t, pool, "SELECT count(*) FROM answers"); n != 0 {
		t.Fatalf("answer rows = %d, want 0", n)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
