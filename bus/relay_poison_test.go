package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
)

// startDefaultRelay starts a relay with the default configuration: only
// the pool, the publisher and the test logger are set, whatever cfg holds
// besides.
func startDefaultRelay(t *testing.T, pool *pgxpool.Pool, pub message.Publisher) (*bus.Relay, func() error) {
	t.Helper()
	return startRelayExact(t, bus.RelayConfig{Pool: pool, Publisher: pub})
}

// startRelayExact starts a relay with cfg as given (startRelay shortens the
// poll interval and backoff for speed; this does not).
func startRelayExact(t *testing.T, cfg bus.RelayConfig) (*bus.Relay, func() error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	r, err := bus.NewRelay(cfg)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(90 * time.Second):
				t.Errorf("relay did not stop within 90s")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return r, stop
}

// waitDeadLetters waits until n dead letters are listed and returns them.
func waitDeadLetters(t *testing.T, pool *pgxpool.Pool, n int, timeout time.Duration) []bus.DeadLetter {
	t.Helper()
	dls := bus.NewDeadLetters(pool)
	deadline := time.Now().Add(timeout)
	for {
		list, err := dls.List(context.Background(), bus.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) >= n {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters after %s, want %d", len(list), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rejectingPublisher refuses one message for good (a permanent error, as a
// broker adapter reports a payload it will never accept), taking delay per
// attempt, and publishes every other message.
type rejectingPublisher struct {
	message.Publisher
	reject   string // outbox row uuid to refuse
	delay    time.Duration
	attempts atomic.Int64
}

func (p *rejectingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if m.UUID == p.reject {
			p.attempts.Add(1)
			time.Sleep(p.delay)
			return bus.Permanent(errors.New("message too large for the broker"))
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

// Regression (issue 9.1): with the default settings a malformed row was
// tried 4 times, its batch given up at the AckDeadline, and its count
// restarted: it looped forever and the 126 events behind it in its lane
// were never delivered.
func TestPoisonRowIsDeadLetteredWithDefaultConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	badID := uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, '{"hello": "world"}', '{"event_name": "edupulse.pulse.created"}', pg_current_xact_id())`, badID); err != nil {
		t.Fatal(err)
	}
	const n = 126
	for i := range n {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
			return []bus.Event{pulseCreated(uuid.New(), fmt.Sprint(i))}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	relay, _ := startDefaultRelay(t, pool, gc)
	dead := waitDeadLetters(t, pool, 1, 60*time.Second)
	t.Logf("dead-lettered %s after the relay started", time.Since(start).Round(time.Millisecond))
	if dead[0].MessageUUID != badID || dead[0].Attempts != bus.MaxAttemptsDefault {
		t.Fatalf("dead letter = %+v, want %s after %d attempts", dead[0], badID, bus.MaxAttemptsDefault)
	}
	col.waitDistinct(n, 30*time.Second)
	waitFor(t, "published counter", func() bool { return relay.Stats().Published >= n })
	if st := relay.Stats(); st.DeadLettered != 1 || st.Failed != bus.MaxAttemptsDefault {
		t.Fatalf("relay stats = %+v, want 1 dead-lettered after %d failed attempts", st, bus.MaxAttemptsDefault)
	}
}

// Regression (issue 9.1): the attempt count lived in the message and
// restarted with every batch, so a broker that takes long to refuse a
// message (here 1 s per attempt: 4 attempts fit in the default 5 s
// AckDeadline) never got it dead-lettered. The count is kept in PostgreSQL
// now, across batches.
func TestAttemptCountSurvivesAbandonedBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	bad := pulseCreated(uuid.New(), "too large")
	good := pulseCreated(uuid.New(), "fine")
	for _, ev := range []bus.Event{bad, good} {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	badRow := bad.Envelope().ID.String() // an outbox row's uuid is its event's id
	pub := &rejectingPublisher{Publisher: gc, reject: badRow, delay: time.Second}
	startDefaultRelay(t, pool, pub)
	dead := waitDeadLetters(t, pool, 1, 90*time.Second)
	if dead[0].MessageUUID != badRow || dead[0].Attempts != bus.MaxAttemptsDefault {
		t.Fatalf("dead letter = %+v, want %s after %d attempts", dead[0], badRow, bus.MaxAttemptsDefault)
	}
	if !strings.Contains(dead[0].Error, "too large") {
		t.Fatalf("dead letter error %q does not carry the broker's", dead[0].Error)
	}
	col.waitDistinct(1, 30*time.Second)
	if got, _ := col.snapshot(); got[0].ID != good.Envelope().ID.String() {
		t.Fatalf("delivered %+v, want the event behind the rejected one", got)
	}
	if a := pub.attempts.Load(); a != bus.MaxAttemptsDefault {
		t.Fatalf("broker saw %d attempts, want %d", a, bus.MaxAttemptsDefault)
	}
}

// The attempt count also survives a relay restart: a second process goes
// on counting where the first stopped.
func TestAttemptCountSurvivesRelayRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	bad := pulseCreated(uuid.New(), "refused")
	good := pulseCreated(uuid.New(), "fine")
	for _, ev := range []bus.Event{bad, good} {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	badRow := bad.Envelope().ID.String() // an outbox row's uuid is its event's id
	attempts := func() int {
		var n int
		err := pool.QueryRow(ctx, `SELECT coalesce((SELECT attempts FROM eventbus_attempts WHERE message_uuid = $1), 0)`, badRow).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The first relay is stopped after two attempts, without waiting for
	// its batch (a short ShutdownTimeout, as a killed process would).
	first := &rejectingPublisher{Publisher: gc, reject: badRow}
	_, stop := startRelayExact(t, bus.RelayConfig{Pool: pool, Publisher: first, ShutdownTimeout: time.Millisecond,
		BackoffInitial: time.Second, BackoffMax: time.Second})
	waitFor(t, "two attempts", func() bool { return attempts() >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	before := attempts()
	if before >= bus.MaxAttemptsDefault {
		t.Fatalf("%d attempts before the restart, want fewer than %d", before, bus.MaxAttemptsDefault)
	}
	second := &rejectingPublisher{Publisher: gc, reject: badRow}
	startDefaultRelay(t, pool, second)
	dead := waitDeadLetters(t, pool, 1, 60*time.Second)
	if dead[0].Attempts != bus.MaxAttemptsDefault {
		t.Fatalf("dead letter after %d attempts, want %d", dead[0].Attempts, bus.MaxAttemptsDefault)
	}
	if got := second.attempts.Load(); got != int64(bus.MaxAttemptsDefault-before) {
		t.Fatalf("second relay tried %d times after %d earlier attempts, want %d", got, before, bus.MaxAttemptsDefault-before)
	}
	col.waitDistinct(1, 30*time.Second)
	if attempts() != 0 {
		t.Fatalf("attempts row left after the dead letter")
	}
}

func TestRelayConfigValidateRejectsWhatCannotWork(t *testing.T) {
	gc := newGoChannel(t)
	pool := (*pgxpool.Pool)(nil)
	for name, tc := range map[string]struct {
		cfg  bus.RelayConfig
		want string
	}{
		"no pool":                {bus.RelayConfig{Publisher: gc}, "nil Pool"},
		"deadline below backoff": {bus.RelayConfig{Publisher: gc, AckDeadline: 50 * time.Millisecond}, "AckDeadline"},
		"group with a slash":     {bus.RelayConfig{Publisher: gc, ConsumerGroup: "a/b"}, "ConsumerGroup"},
		"group too long":         {bus.RelayConfig{Publisher: gc, ConsumerGroup: strings.Repeat("g", 251)}, "ConsumerGroup"},
		"backoff inverted":       {bus.RelayConfig{Publisher: gc, BackoffInitial: time.Second, BackoffMax: time.Millisecond}, "BackoffInitial"},
		"negative attempts":      {bus.RelayConfig{Publisher: gc, MaxAttempts: -1}, "MaxAttempts"},
	} {
		tc.cfg.Pool = pool
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error about %s", name, err, tc.want)
		}
	}
}
