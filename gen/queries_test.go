package gen_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestQueries publishes events through the outbox and reads them back with
// the typed query wrappers.
func TestQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatalf("new outbox: %v", err)
	}
	other := uuid.MustParse("0190c0de-0000-7000-8000-0000000000ff")
	a1 := gen.NewPulseCreated(pulseID, authorID, "first", at)
	b := gen.NewPulseCreated(other, authorID, "other", at)
	answered := gen.NewPulseAnswered(pulseID, answerID, studentID, at)
	a2 := gen.NewPulseCreated(pulseID, authorID, "again", at)
	if err := ob.Publish(ctx, pool, a1, b, answered); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := ob.Publish(ctx, pool, a2); err != nil {
		t.Fatalf("publish: %v", err)
	}

	q := gen.NewQueries(pool)
	ids := func(evs []gen.PulseCreated) []uuid.UUID {
		var out []uuid.UUID
		for _, e := range evs {
			out = append(out, e.Envelope().ID)
		}
		return out
	}
	id := func(evs ...gen.PulseCreated) []uuid.UUID { return ids(evs) }

	got, err := q.ListPulseCreatedByAggregate(ctx, pulseID.String(), 10)
	if err != nil {
		t.Fatalf("ListPulseCreatedByAggregate: %v", err)
	}
	if diff := cmp.Diff(id(a1, a2), ids(got)); diff != "" {
		t.Errorf("ListPulseCreatedByAggregate ids (-want +got):\n%s", diff)
	}
	if len(got) == 2 {
		if diff := cmp.Diff(a2.PulseCreated, got[1].PulseCreated); diff != "" {
			t.Errorf("decoded payload (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(a2.Envelope().OccurredAt, got[1].Envelope().OccurredAt); diff != "" {
			t.Errorf("decoded occurred_at (-want +got):\n%s", diff)
		}
	}
	if got, err := q.ListPulseCreatedByAggregate(ctx, pulseID.String(), 1); err != nil || len(got) != 1 {
		t.Errorf("ListPulseCreatedByAggregate(limit 1) = %d events, %v; want 1", len(got), err)
	}
	if _, err := q.ListPulseCreatedByAggregate(ctx, pulseID.String(), -1); err == nil {
		t.Errorf("ListPulseCreatedByAggregate(limit -1) succeeded, want an error")
	}

	// A day's margin either way whatever the server's time zone.
	got, err = q.ListPulseCreatedSince(ctx, time.Now().Add(-24*time.Hour), 10)
	if err != nil {
		t.Fatalf("ListPulseCreatedSince: %v", err)
	}
	if len(got) != 3 {
		t.Errorf("ListPulseCreatedSince(yesterday) = %d events, want 3", len(got))
	}
	if got, err := q.ListPulseCreatedSince(ctx, time.Now().Add(24*time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("ListPulseCreatedSince(tomorrow) = %d events, %v; want none", len(got), err)
	}

	answers, err := q.ListPulseAnsweredByAggregate(ctx, pulseID.String(), 10)
	if err != nil || len(answers) != 1 || answers[0].AnswerID != answerID {
		t.Errorf("ListPulseAnsweredByAggregate = %v, %v; want the one answer", answers, err)
	}

	n, err := q.CountPendingPulseCreated(ctx, "relay")
	if err != nil || n != 3 {
		t.Errorf("CountPendingPulseCreated = %d, %v; want 3", n, err)
	}
	if n, err := q.CountPendingBadgeAwarded(ctx, "relay"); err != nil || n != 0 {
		t.Errorf("CountPendingBadgeAwarded = %d, %v; want 0", n, err)
	}
}
