package bus_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
)

// timingPublisher records when each event reached the broker, and makes
// the events of slowLane take slowDelay each.
type timingPublisher struct {
	message.Publisher
	lanes     int
	slowLane  int
	slowDelay time.Duration
	mu        sync.Mutex
	at        map[string]time.Time
}

func (p *timingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if p.slowDelay > 0 && bus.LaneOf(m.Metadata.Get(bus.MetadataAggregateID), p.lanes) == p.slowLane {
			time.Sleep(p.slowDelay)
		}
		p.mu.Lock()
		p.at[m.UUID] = time.Now()
		p.mu.Unlock()
	}
	return p.Publisher.Publish(topic, msgs...)
}

func (p *timingPublisher) reached(id string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.at[id]
	return at, ok
}

// aggregateInLane returns a new aggregate id whose events go to lane.
func aggregateInLane(lane, lanes int) uuid.UUID {
	for {
		id := uuid.New()
		if bus.LaneOf(id.String(), lanes) == lane {
			return id
		}
	}
}

// latencies publishes n events of lane, one at a time, and returns how long
// each took from its commit to the broker.
func latencies(t *testing.T, pool *pgxpool.Pool, ob *bus.Outbox, pub *timingPublisher, lane, n int) []time.Duration {
	t.Helper()
	ctx := context.Background()
	var out []time.Duration
	for i := range n {
		ev := pulseCreated(aggregateInLane(lane, ob.Lanes()), fmt.Sprint(i))
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		id := ev.Envelope().ID.String()
		deadline := committed.Add(30 * time.Second)
		for {
			if at, ok := pub.reached(id); ok {
				out = append(out, at.Sub(committed))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("event of lane %d not relayed within 30s", lane)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// Regression (issue 9.4): a batch transaction locked its offsets row FOR
// UPDATE, which gave it a transaction id, which held back what every
// watermill-sql reader of the cluster may read while the batch was
// published: a lane whose broker took 300 ms per message delayed a lane-0
// event by 2.8 s. Lanes are independent now.
func TestSlowLaneDoesNotDelayOtherLanes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const lanes = 2
	pool, ob := newIsolatedOutboxDB(t, lanes)
	gc := newGoChannel(t)
	newCollector(t, gc)
	pub := &timingPublisher{Publisher: gc, lanes: lanes, slowLane: 1, slowDelay: 300 * time.Millisecond, at: map[string]time.Time{}}
	startDefaultRelay(t, pool, pub)

	baseline := latencies(t, pool, ob, pub, 0, 9)

	// Keep lane 1 busy with a batch of slow publishes (20 × 300 ms).
	slowAgg := aggregateInLane(1, lanes)
	slow := make([]bus.Event, 20)
	for i := range slow {
		slow[i] = pulseAnswered(slowAgg)
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return slow, nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow lane's first publish", func() bool {
		_, ok := pub.reached(slow[0].Envelope().ID.String())
		return ok
	})
	during := latencies(t, pool, ob, pub, 0, 9)
	if _, ok := pub.reached(slow[len(slow)-1].Envelope().ID.String()); ok {
		// Either lane 0's events got through only once the slow batch was
		// done (the bug), or the machine is far too slow for the test.
		t.Fatalf("lane 0's events got through only after lane 1's 6 s batch ended (latencies %v): lanes are coupled", during)
	}
	t.Logf("lane 0 commit-to-broker median: %s alone, %s while lane 1 publishes slowly", median(baseline), median(during))
	if median(during) > median(baseline)+50*time.Millisecond {
		t.Fatalf("lane 0 median latency %s while lane 1 is slow, %s without: lanes are coupled", median(during), median(baseline))
	}
}

// errorCounter is a slog handler counting records at Error level.
type errorCounter struct {
	slog.Handler
	errors *atomic.Int64
}

func (h errorCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.errors.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h errorCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return errorCounter{h.Handler.WithAttrs(attrs), h.errors}
}

func (h errorCounter) WithGroup(name string) slog.Handler {
	return errorCounter{h.Handler.WithGroup(name), h.errors}
}

// drain starts relays relay processes, waits until they listen, commits n
// events over 4 lanes in one transaction, and returns how long the
// relays took to deliver them all, and how many errors they logged.
func drain(t *testing.T, relays, n int) (time.Duration, int64) {
	t.Helper()
	ctx := context.Background()
	const lanes = 4
	pool, ob := newIsolatedOutboxDB(t, lanes)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	var errs atomic.Int64
	logger := slog.New(errorCounter{testLogger().Handler(), &errs})
	// Each drain stops its relays: the test drains six times, and relays
	// left running would share the CPU with the later drains.
	for range relays {
		_, stop := startRelayExact(t, bus.RelayConfig{Pool: newPool(t, pool, lanes+3), Publisher: gc, Logger: logger})
		defer func() {
			if err := stop(); err != nil {
				t.Errorf("stop relay: %v", err)
			}
		}()
	}
	waitFor(t, "every relay to listen", func() bool {
		var listening int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN eventbus_outbox'`).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		return listening == relays
	})
	events := make([]bus.Event, n)
	for i := range events {
		events[i] = pulseCreated(uuid.New(), "backlog")
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events, nil }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	col.waitDistinct(n, 60*time.Second)
	return time.Since(start), errs.Load()
}

// Regression (issue 9.5): extra relay processes blocked on the offsets
// row lock in REPEATABLE READ and woke to serialization failures: 3,000
// events drained in 589 ms by one relay and in 1.224 s by five, with 403
// rolled-back transactions. A relay that does not get a lane now skips it.
//
// Not parallel: it compares wall-clock times, and the package's parallel
// tests (the 100,000-event one above all) took the CPU from one side or the
// other (it failed so on a 2-core machine in CI, on main as on a branch).
// Go runs a package's parallel tests only after its sequential ones.
func TestMoreRelayProcessesAreNotSlower(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	const n = 3000
	// Alternate the two, five times, the order reversed every other
	// round, and compare the best of each: a loaded machine slows single
	// runs down, not the best of five. (Best of three failed once with
	// the whole package running under -race on a loaded 2-core machine:
	// 1 relay 1.43 s, 0.73 s, 1.29 s; 5 relays 1.86 s, 1.35 s, 1.26 s.
	// Alone, under the same load, the best of each were within 25%.)
	var one, five []time.Duration
	for round := range 5 {
		order := []int{1, 5}
		if round%2 == 1 {
			order = []int{5, 1}
		}
		for _, relays := range order {
			d, errs := drain(t, relays, n)
			if errs != 0 {
				t.Fatalf("%d relays logged %d errors, want none", relays, errs)
			}
			if relays == 1 {
				one = append(one, d)
			} else {
				five = append(five, d)
			}
		}
	}
	bestOne, bestFive := slices.Min(one), slices.Min(five)
	t.Logf("%d events drained by 1 relay in %v, by 5 relays in %v", n, one, five)
	if bestFive > bestOne*5/4+200*time.Millisecond {
		t.Fatalf("5 relays took at best %s, 1 relay %s: more relays are slower", bestFive, bestOne)
	}
}
