// Package bustest helps test code that publishes events: assertions that
// the outbox holds (or does not hold) events of a type, returning them
// typed, in the style of riverqueue's rivertest.
//
// Pass the transaction the code under test published in to see its
// uncommitted events, or a pool to see committed ones:
//
//	func TestCreatePulse(t *testing.T) {
//		tx := ... // begin; svc.CreatePulse(ctx, tx, ...)
//		evs := bustest.RequirePublished[gen.PulseCreated](ctx, t, tx, gen.Registry(), nil)
//		if evs[0].Title != "Intro" { ... }
//	}
package bustest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
)

// DB runs queries: a pgx.Tx, a *pgxpool.Pool or a *pgx.Conn.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// testingT is the part of testing.TB the assertions use, so that their
// own failures can be tested.
type testingT interface {
	Helper()
	Errorf(format string, args ...any)
	FailNow()
}

var _ testingT = testing.TB(nil)

// failureHeader starts every failure message.
const failureHeader = "eventbus assertion failure:"

// RequireOpts narrows RequirePublished. The zero value requires at least
// one event of the type.
type RequireOpts struct {
	// AggregateID, if set, requires the events to belong to this aggregate.
	AggregateID string
	// Count, if positive, requires exactly this many events.
	Count int
}

// RequirePublished requires that the outbox, as db sees it, holds events
// of type T matching opts, and returns them in commit order, decoded.
func RequirePublished[T bus.Event](ctx context.Context, tb testing.TB, db DB, reg *bus.Registry, opts *RequireOpts) []T {
	tb.Helper()
	return requirePublished[T](ctx, tb, db, reg, opts)
}

func requirePublished[T bus.Event](ctx context.Context, t testingT, db DB, reg *bus.Registry, opts *RequireOpts) []T {
	t.Helper()
	if opts == nil {
		opts = &RequireOpts{}
	}
	evs, err := published[T](ctx, db, reg, opts.AggregateID)
	if err != nil {
		t.Errorf("%s %v", failureHeader, err)
		t.FailNow()
		return nil
	}
	name := (*new(T)).EventName()
	where := ""
	if opts.AggregateID != "" {
		where = fmt.Sprintf(" for aggregate %q", opts.AggregateID)
	}
	switch {
	case opts.Count > 0 && len(evs) != opts.Count:
		t.Errorf("%s expected %d %s event(s)%s in the outbox, found %d", failureHeader, opts.Count, name, where, len(evs))
		t.FailNow()
	case len(evs) == 0:
		t.Errorf("%s expected a %s event%s in the outbox, found none", failureHeader, name, where)
		t.FailNow()
	}
	return evs
}

// RequireNotPublished requires that the outbox, as db sees it, holds no
// event of type T (of aggregateID, when it is not empty).
func RequireNotPublished[T bus.Event](ctx context.Context, tb testing.TB, db DB, reg *bus.Registry, aggregateID string) {
	tb.Helper()
	requireNotPublished[T](ctx, tb, db, reg, aggregateID)
}

func requireNotPublished[T bus.Event](ctx context.Context, t testingT, db DB, reg *bus.Registry, aggregateID string) {
	t.Helper()
	evs, err := published[T](ctx, db, reg, aggregateID)
	if err != nil {
		t.Errorf("%s %v", failureHeader, err)
		t.FailNow()
		return
	}
	if len(evs) > 0 {
		t.Errorf("%s expected no %s event in the outbox, found %d (first: %s)", failureHeader,
			(*new(T)).EventName(), len(evs), evs[0].Envelope().ID)
		t.FailNow()
	}
}

// published reads the events of type T from the outbox.
func published[T bus.Event](ctx context.Context, db DB, reg *bus.Registry, aggregateID string) ([]T, error) {
	zero := *new(T)
	rows, err := db.Query(ctx, `SELECT payload FROM eventbus_outbox
		WHERE metadata->>'event_name' = $1 AND metadata->>'event_version' = $2
		  AND ($3 = '' OR metadata->>'aggregate_id' = $3)
		ORDER BY transaction_id, "offset"`,
		zero.EventName(), fmt.Sprint(zero.EventVersion()), aggregateID)
	if err != nil {
		return nil, fmt.Errorf("read the outbox: %w", err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("read the outbox: %w", err)
	}
	out := make([]T, 0, len(payloads))
	for _, p := range payloads {
		ev, err := reg.DecodeOutboxPayload(p)
		if err != nil {
			return nil, fmt.Errorf("decode a %s row: %w", zero.EventName(), err)
		}
		typed, ok := ev.(T)
		if !ok {
			return nil, fmt.Errorf("a %s row decoded to %T, not %T", zero.EventName(), ev, zero)
		}
		out = append(out, typed)
	}
	return out, nil
}
