package bus_test

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
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testLogger logs warnings and errors only, unless EVENTBUS_TEST_DEBUG is set.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("EVENTBUS_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// newOutboxDB returns a migrated database with the given number of lanes and
// an Outbox over it.
func newOutboxDB(t testing.TB, lanes int) (*pgxpool.Pool, *bus.Outbox) {
	t.Helper()
	return migrateOutbox(t, pgtest.NewPool(t), lanes)
}

// newIsolatedOutboxDB is newOutboxDB on a cluster of the test's own, for
// tests that measure time or hold long transactions (see
// pgtest.NewIsolatedPool).
func newIsolatedOutboxDB(t testing.TB, lanes int) (*pgxpool.Pool, *bus.Outbox) {
	t.Helper()
	return migrateOutbox(t, pgtest.NewIsolatedPool(t), lanes)
}

func migrateOutbox(t testing.TB, pool *pgxpool.Pool, lanes int) (*pgxpool.Pool, *bus.Outbox) {
	t.Helper()
	ctx := context.Background()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: lanes}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatalf("new outbox: %v", err)
	}
	if ob.Lanes() != lanes {
		t.Fatalf("outbox lanes = %d, want %d", ob.Lanes(), lanes)
	}
	return pool, ob
}

// newPool opens another pool on the same database, as a second process would.
func newPool(t testing.TB, like *pgxpool.Pool, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg := like.Config().Copy()
	cfg.MaxConns = maxConns
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("new pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// delivery is one message seen by a collector.
type delivery struct {
	ID          string
	Name        string
	AggregateID string
	Topic       string
	Event       bus.Event
}

// collector subscribes to every EduPulse topic of a GoChannel and records
// what arrives, in arrival order. The GoChannel blocks each publish until the
// collector acked, so arrival order is publish order.
type collector struct {
	t    testing.TB
	mu   sync.Mutex
	got  []delivery
	seen map[string]int
	more chan struct{}
}

func newGoChannel(t testing.TB) *gochannel.GoChannel {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	return gc
}

func newCollector(t testing.TB, sub message.Subscriber) *collector {
	t.Helper()
	c := &collector{t: t, seen: map[string]int{}, more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, name := range gen.Registry().Names() {
		ch, err := sub.Subscribe(ctx, name)
		if err != nil {
			t.Fatalf("subscribe %s: %v", name, err)
		}
		go func() {
			for msg := range ch {
				c.record(name, msg)
				msg.Ack()
			}
		}()
	}
	return c
}

func (c *collector) record(topic string, msg *message.Message) {
	ev, err := gen.Registry().Decode(msg)
	if err != nil {
		c.t.Errorf("collector: decode %s: %v", msg.UUID, err)
	}
	c.mu.Lock()
	c.got = append(c.got, delivery{ID: msg.UUID, Name: msg.Metadata.Get(bus.MetadataName),
		AggregateID: msg.Metadata.Get(bus.MetadataAggregateID), Topic: topic, Event: ev})
	c.seen[msg.UUID]++
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// waitDistinct waits until n distinct events arrived, failing after timeout.
func (c *collector) waitDistinct(n int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		distinct := len(c.seen)
		c.mu.Unlock()
		if distinct >= n {
			return
		}
		select {
		case <-c.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			c.t.Fatalf("collector: %d distinct events after %s, want %d", distinct, timeout, n)
		}
	}
}

func (c *collector) snapshot() ([]delivery, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]int, len(c.seen))
	for k, v := range c.seen {
		seen[k] = v
	}
	return append([]delivery(nil), c.got...), seen
}

// runRelay starts a relay and returns a function that stops it and reports
// Run's error.
func runRelay(t testing.TB, cfg bus.RelayConfig) (stop func() error) {
	t.Helper()
	_, stop = startRelay(t, cfg)
	return stop
}

// startRelay is runRelay that also returns the relay.
func startRelay(t testing.TB, cfg bus.RelayConfig) (relay *bus.Relay, stop func() error) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	cfg.PollInterval = max(cfg.PollInterval, 200*time.Millisecond)
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = 10 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 200 * time.Millisecond
	}
	r, err := bus.NewRelay(cfg)
	if err != nil {
		t.Fatalf("new relay: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(60 * time.Second):
				t.Errorf("relay did not stop within 60s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return r, stop
}

func pulseCreated(pulse uuid.UUID, title string) gen.PulseCreated {
	return gen.NewPulseCreated(pulse, uuid.New(), title, time.Now().UTC().Truncate(time.Microsecond))
}

func pulseAnswered(pulse uuid.UUID) gen.PulseAnswered {
	return gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), time.Now().UTC().Truncate(time.Microsecond))
}
