package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// startConsumer runs c until the test ends.
func startConsumer(t *testing.T, c *bus.Consumer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	select {
	case <-c.Running():
	case err := <-done:
		t.Fatalf("consumer stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("consumer did not start")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConsumerTypedHandlersRetriesAndDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	gc := newGoChannel(t)
	dead := newGoChannel(t)
	deadSub, err := dead.Subscribe(ctx, bus.DeadLetterTopicDefault)
	if err != nil {
		t.Fatal(err)
	}
	deadCh := make(chan *message.Message, 8)
	go func() { // ack at once: the GoChannel blocks the publisher until then
		for m := range deadSub {
			m.Ack()
			deadCh <- m
		}
	}()
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "typed",
		DeadLetter: dead, Logger: testLogger(), MaxRetries: 2, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var created, answered, flaky, panics atomic.Int64
	bus.On(c, func(ctx context.Context, e gen.PulseCreated) error {
		switch e.Title {
		case "flaky": // fails twice, then succeeds: retried in place
			if flaky.Add(1) <= 2 {
				return errors.New("transient")
			}
		case "always fails":
			return errors.New("handler is broken for this one")
		case "panics":
			panics.Add(1)
			panic("boom")
		}
		created.Add(1)
		return nil
	})
	bus.On(c, func(ctx context.Context, e gen.PulseAnswered) error { answered.Add(1); return nil })
	startConsumer(t, c)

	publish := func(ev bus.Event) {
		t.Helper()
		msg, err := gen.Registry().NewMessage(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = gc.Publish(ev.EventName(), msg) }() // blocks until acked
	}
	publish(pulseCreated(uuid.New(), "flaky"))
	publish(pulseCreated(uuid.New(), "always fails"))
	publish(pulseCreated(uuid.New(), "panics"))
	publish(pulseCreated(uuid.New(), "fine"))
	publish(pulseAnswered(uuid.New()))
	waitFor(t, "handled events", func() bool { return created.Load() == 2 && answered.Load() == 1 })

	reasons := map[string]bool{}
	for range 2 {
		select {
		case m := <-deadCh:
			reasons[m.Metadata.Get(bus.MetadataDeadLetterReason)] = true
		case <-time.After(15 * time.Second):
			t.Fatalf("dead letters: %v, want 2", reasons)
		}
	}
	var sawBroken, sawPanic bool
	for r := range reasons {
		sawBroken = sawBroken || strings.Contains(r, "handler is broken")
		sawPanic = sawPanic || strings.Contains(r, "boom")
	}
	if !sawBroken || !sawPanic {
		t.Fatalf("dead-letter reasons %v, want the failing handler and the panic", reasons)
	}
	if panics.Load() != 3 { // first attempt + MaxRetries
		t.Fatalf("panicking handler ran %d times, want 3", panics.Load())
	}
	waitFor(t, "stats", func() bool { st := c.Stats(); return st.DeadLettered == 2 && st.Handled == 3 })
}

func TestConsumerInboxChainsAndCleans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	// The default retention while the duplicates arrive: a short one could
	// clean the inbox row between two deliveries on a loaded machine.
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "badges",
		DeadLetter: gc, Pool: pool, Outbox: ob, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int64
	handler := func(ctx context.Context, tx pgx.Tx, e gen.PulseAnswered) ([]bus.Event, error) {
		applied.Add(1)
		return []bus.Event{gen.NewBadgeAwarded(uuid.New(), e.StudentID, "answered", time.Now().UTC())}, nil
	}
	if err := bus.OnTx(c, handler); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)

	ev := pulseAnswered(uuid.New())
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // delivered three times: applied once
		if err := gc.Publish(ev.EventName(), msg.Copy()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "duplicates", func() bool { return c.Stats().Duplicates == 2 })
	if applied.Load() != 1 {
		t.Fatalf("handler applied %d times, want 1", applied.Load())
	}
	// The chained event sits in the outbox, committed with the inbox row.
	var chained int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM eventbus_outbox WHERE metadata->>'event_name' = 'edupulse.badge.awarded'`).Scan(&chained); err != nil {
		t.Fatal(err)
	}
	if chained != 1 {
		t.Fatalf("chained BadgeAwarded rows = %d, want 1", chained)
	}
	// A consumer of the group with a short retention cleans the row.
	cleaner, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: newGoChannel(t), Group: "badges",
		DeadLetter: gc, Pool: pool, Outbox: ob, Logger: testLogger(),
		InboxRetention: 300 * time.Millisecond, InboxCleanInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.OnTx(cleaner, handler); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, cleaner)
	waitFor(t, "inbox cleaned", func() bool {
		var n int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM eventbus_inbox").Scan(&n)
		return n == 0
	})
}

// Issue 10.2: each consumer's inbox cleaner deletes its own group's rows
// with its own retention, never another group's.
func TestConsumerInboxCleanedPerGroup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newOutboxDB(t, 1)
	start := func(group string, retention time.Duration) (*bus.Consumer, message.Publisher) {
		gc := newGoChannel(t)
		c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: gc, Group: group,
			DeadLetter: gc, Pool: pool, Logger: testLogger(),
			InboxRetention: retention, InboxCleanInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.OnTx(c, func(context.Context, pgx.Tx, pingV1) ([]bus.Event, error) { return nil, nil }); err != nil {
			t.Fatal(err)
		}
		startConsumer(t, c)
		return c, gc
	}
	// Rows ten minutes old in both groups: past the short retention, well
	// within the long one.
	for _, group := range []string{"short", "long"} {
		if _, err := pool.Exec(ctx, `INSERT INTO eventbus_inbox (consumer_group, event_id, received_at)
			VALUES ($1, $2, now() - interval '10 minutes')`, group, uuid.New()); err != nil {
			t.Fatal(err)
		}
	}
	long, longPub := start("long", time.Hour)
	short, shortPub := start("short", 300*time.Millisecond)
	ev := newPingV1("both")
	publishPing(t, longPub, ev)
	publishPing(t, shortPub, ev)
	waitFor(t, "both groups handled the event", func() bool {
		return long.Stats().Handled == 1 && short.Stats().Handled == 1
	})
	count := func(group string) int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM eventbus_inbox WHERE consumer_group = $1", group).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The short group's cleaner removes both of its rows; the long group's
	// rows, the old one included, stay.
	waitFor(t, "short group's inbox cleaned", func() bool { return count("short") == 0 })
	if n := count("long"); n != 2 {
		t.Fatalf("long group's inbox rows = %d after the short group's cleaning, want 2", n)
	}
}

func TestConsumerConfigValidate(t *testing.T) {
	_, err := bus.NewConsumer(bus.ConsumerConfig{})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"nil Registry", "nil Subscriber", "empty Group", "nil DeadLetter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
