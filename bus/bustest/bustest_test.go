package bustest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// mockT records failures instead of failing the test.
type mockT struct {
	failed bool
	msg    string
}

func (m *mockT) Helper() {}
func (m *mockT) Errorf(format string, args ...any) {
	m.failed = true
	m.msg = fmt.Sprintf(format, args...)
}
func (m *mockT) FailNow() {}

func TestRequirePublished(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2}); err != nil {
		t.Fatal(err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	reg := gen.Registry()
	pulse := uuid.New()

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	now := time.Now().UTC().Truncate(time.Microsecond)
	if err := ob.Publish(ctx, tx,
		gen.NewPulseCreated(pulse, uuid.New(), "Intro", now),
		gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), now),
		gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), now)); err != nil {
		t.Fatal(err)
	}

	// Inside the transaction the events are visible, typed.
	created := RequirePublished[gen.PulseCreated](ctx, t, tx, reg, &RequireOpts{AggregateID: pulse.String(), Count: 1})
	if created[0].Title != "Intro" {
		t.Fatalf("title = %q", created[0].Title)
	}
	RequirePublished[gen.PulseAnswered](ctx, t, tx, reg, &RequireOpts{Count: 2})
	RequireNotPublished[gen.BadgeAwarded](ctx, t, tx, reg, "")
	// Outside it, before the commit, they are not.
	RequireNotPublished[gen.PulseCreated](ctx, t, pool, reg, "")

	for name, tc := range map[string]struct {
		check func(*mockT)
		want  string
	}{
		"none":  {func(m *mockT) { requirePublished[gen.LessonPublished](ctx, m, tx, reg, nil) }, "expected a edupulse.lesson.published event in the outbox, found none"},
		"count": {func(m *mockT) { requirePublished[gen.PulseAnswered](ctx, m, tx, reg, &RequireOpts{Count: 3}) }, "expected 3 edupulse.pulse.answered event(s) in the outbox, found 2"},
		"aggregate": {func(m *mockT) {
			requirePublished[gen.PulseCreated](ctx, m, tx, reg, &RequireOpts{AggregateID: "other"})
		}, `for aggregate "other"`},
		"unexpected":  {func(m *mockT) { requireNotPublished[gen.PulseCreated](ctx, m, tx, reg, "") }, "expected no edupulse.pulse.created event in the outbox, found 1"},
		"no relation": {func(m *mockT) { requirePublished[gen.PulseCreated](ctx, m, noOutbox{}, reg, nil) }, "read the outbox"},
	} {
		m := &mockT{}
		tc.check(m)
		if !m.failed || !strings.HasPrefix(m.msg, failureHeader) || !strings.Contains(m.msg, tc.want) {
			t.Errorf("%s: failed=%v msg=%q, want a failure saying %q", name, m.failed, m.msg, tc.want)
		}
	}
}

// noOutbox is a DB whose queries fail, as on a database without the schema.
type noOutbox struct{}

func (noOutbox) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, fmt.Errorf(`relation "eventbus_outbox" does not exist`)
}
