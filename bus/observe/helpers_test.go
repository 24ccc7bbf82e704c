package observe_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("EVENTBUS_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// newOutboxDB returns a migrated database with lanes lanes and an Outbox.
func newOutboxDB(t *testing.T, lanes int) (*pgxpool.Pool, *bus.Outbox) {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: lanes}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatalf("new outbox: %v", err)
	}
	return pool, ob
}

// newGoChannel returns an in-process broker whose publishes block until the
// subscribers acked.
func newGoChannel(t *testing.T) *gochannel.GoChannel {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	return gc
}

// noClose keeps a consumer from closing the shared GoChannel.
type noClose struct{ *gochannel.GoChannel }

func (noClose) Close() error { return nil }

// start runs fn in the background until the test ends (or stop is called)
// and reports its error.
func start(t *testing.T, name string, fn func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("%s did not stop within 60s", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startConsumer runs c and waits until it subscribed.
func startConsumer(t *testing.T, c *bus.Consumer) (stop func()) {
	t.Helper()
	stop = start(t, "consumer", c.Run)
	select {
	case <-c.Running():
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not start within 30s")
	}
	return stop
}

// startRelay runs a relay with test-friendly intervals.
func startRelay(t *testing.T, cfg bus.RelayConfig) (stop func()) {
	t.Helper()
	cfg.Logger = testLogger()
	cfg.PollInterval = 200 * time.Millisecond
	cfg.BackoffInitial = 10 * time.Millisecond
	cfg.BackoffMax = 100 * time.Millisecond
	r, err := bus.NewRelay(cfg)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	return start(t, "relay", r.Run)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func publish(t *testing.T, ctx context.Context, pool *pgxpool.Pool, ob *bus.Outbox, evs ...bus.Event) {
	t.Helper()
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil }); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func pulseCreated(title string) gen.PulseCreated {
	return gen.NewPulseCreated(uuid.New(), uuid.New(), title, time.Now().UTC().Truncate(time.Microsecond))
}

// redeliver publishes evs straight to the broker again, as a relay that
// crashed before acknowledging would.
func redeliver(t *testing.T, pub message.Publisher, evs ...bus.Event) {
	t.Helper()
	for _, ev := range evs {
		msg, err := gen.Registry().NewMessage(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ev.EventName(), msg); err != nil {
			t.Fatalf("redeliver: %v", err)
		}
	}
}
