package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

func TestRolledBackDeliversNothingCommittedDeliversOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	rolledBack := pulseCreated(uuid.New(), "never")
	errBoom := errors.New("boom")
	err := ob.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
		if err := ob.Publish(ctx, tx, rolledBack); err != nil {
			return nil, err
		}
		return nil, errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx error = %v, want %v", err, errBoom)
	}

	pulse := uuid.New()
	committed := []bus.Event{pulseCreated(pulse, "Intro to Topology"), pulseAnswered(pulse), pulseAnswered(pulse)}
	if err := ob.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
		return committed, nil
	}); err != nil {
		t.Fatalf("InTx: %v", err)
	}

	stop := runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})
	col.waitDistinct(len(committed), 10*time.Second)
	time.Sleep(300 * time.Millisecond) // let a duplicate or the rolled-back event show up
	if err := stop(); err != nil {
		t.Fatalf("relay: %v", err)
	}

	got, seen := col.snapshot()
	if len(got) != len(committed) {
		t.Fatalf("delivered %d messages, want %d: %+v", len(got), len(committed), got)
	}
	if seen[rolledBack.Envelope().ID.String()] != 0 {
		t.Fatalf("rolled-back event was delivered")
	}
	for i, ev := range committed {
		if got[i].ID != ev.Envelope().ID.String() {
			t.Fatalf("delivery %d = %s, want %s (commit order)", i, got[i].ID, ev.Envelope().ID)
		}
	}
	// The typed event survives the trip: same payload, same envelope.
	first, ok := got[0].Event.(gen.PulseCreated)
	if !ok {
		t.Fatalf("first delivery decoded to %T, want gen.PulseCreated", got[0].Event)
	}
	want := committed[0].(gen.PulseCreated)
	if first.PulseCreated != want.PulseCreated || first.Envelope().ID != want.Envelope().ID ||
		!first.Envelope().OccurredAt.Equal(want.Envelope().OccurredAt) || first.Envelope().AggregateID != pulse.String() {
		t.Fatalf("delivered %+v / %+v, want %+v / %+v", first.PulseCreated, first.Envelope(), want.PulseCreated, want.Envelope())
	}
}

// TestManyProducersManyRelays is the load test of the issue: 10,000 events
// over 200 aggregates from 4 concurrent producers, relayed by 2 relay
// processes (separate pools) over 4 lanes.
func TestManyProducersManyRelays(t *testing.T) {
	t.Parallel()
	const (
		producers  = 4
		aggregates = 200
		perAgg     = 50 // events per aggregate: 200 * 50 = 10,000
		lanes      = 4
	)
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	ctx := context.Background()
	pool, ob := newOutboxDB(t, lanes)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	stop1 := runRelay(t, bus.RelayConfig{Pool: newPool(t, pool, lanes+3), Publisher: gc})
	stop2 := runRelay(t, bus.RelayConfig{Pool: newPool(t, pool, lanes+3), Publisher: gc})

	aggIDs := make([]uuid.UUID, aggregates)
	for i := range aggIDs {
		aggIDs[i] = uuid.New()
	}
	// Producer p owns the aggregates i with i % producers == p and writes
	// their events in order, several aggregates per transaction.
	var g errgroup.Group
	var published atomic.Int64
	for p := range producers {
		g.Go(func() error {
			for seq := range perAgg {
				var batch []bus.Event
				for i := p; i < aggregates; i += producers {
					if seq == 0 {
						batch = append(batch, pulseCreated(aggIDs[i], fmt.Sprintf("pulse %d", i)))
					} else {
						batch = append(batch, pulseAnswered(aggIDs[i]))
					}
					if len(batch) == 10 {
						if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil }); err != nil {
							return err
						}
						published.Add(int64(len(batch)))
						batch = nil
					}
				}
				if len(batch) > 0 {
					if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil }); err != nil {
						return err
					}
					published.Add(int64(len(batch)))
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("producers: %v", err)
	}
	total := aggregates * perAgg
	if published.Load() != int64(total) {
		t.Fatalf("published %d, want %d", published.Load(), total)
	}
	col.waitDistinct(total, 120*time.Second)
	if err := stop1(); err != nil {
		t.Fatalf("relay 1: %v", err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("relay 2: %v", err)
	}

	got, seen := col.snapshot()
	if len(seen) != total {
		t.Fatalf("distinct delivered = %d, want %d", len(seen), total)
	}
	dups := len(got) - len(seen)
	t.Logf("delivered %d messages, %d distinct, %d duplicates", len(got), len(seen), dups)
	assertPerAggregateOrder(t, got)

	// Both relays share per-lane progress: every lane's offset is acked.
	var lanesAcked int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM eventbus_offsets WHERE consumer_group LIKE 'eventbus_relay/%' AND offset_acked > 0`).Scan(&lanesAcked); err != nil {
		t.Fatal(err)
	}
	if lanesAcked != lanes {
		t.Fatalf("lanes with acked progress = %d, want %d", lanesAcked, lanes)
	}
}

// assertPerAggregateOrder checks that, per aggregate, first deliveries come
// in UUIDv7 order (each producer wrote an aggregate's events in order, and
// UUIDv7 ids grow within a process).
func assertPerAggregateOrder(t *testing.T, got []delivery) {
	t.Helper()
	last := map[string]string{}
	firstSeen := map[string]bool{}
	for _, d := range got {
		if firstSeen[d.ID] {
			continue // a redelivery may come late; order is about first deliveries
		}
		firstSeen[d.ID] = true
		if prev, ok := last[d.AggregateID]; ok && d.ID < prev {
			t.Fatalf("aggregate %s: event %s delivered after %s", d.AggregateID, d.ID, prev)
		}
		last[d.AggregateID] = d.ID
	}
}

func TestLateCommitIsDelivered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, PollInterval: 200 * time.Millisecond})

	// The late transaction takes its transaction id first...
	late, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(ctx)
	lateEv := pulseCreated(uuid.New(), "late")
	if err := ob.Publish(ctx, late, lateEv); err != nil {
		t.Fatal(err)
	}
	// ...others commit after it started and are delivered meanwhile...
	var early []bus.Event
	for range 5 {
		ev := pulseCreated(uuid.New(), "early")
		early = append(early, ev)
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	// (watermill-sql holds rows newer than the oldest running transaction
	// back, so nothing is delivered until the late one ends.)
	time.Sleep(500 * time.Millisecond)
	// ...and it commits last.
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	col.waitDistinct(len(early)+1, 10*time.Second)
	_, seen := col.snapshot()
	if seen[lateEv.Envelope().ID.String()] != 1 {
		t.Fatalf("late-committed event delivered %d times, want 1", seen[lateEv.Envelope().ID.String()])
	}
}

// flakyPublisher fails every publish while failing is set.
type flakyPublisher struct {
	message.Publisher
	failing  atomic.Bool
	failures atomic.Int64
}

func (f *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	if f.failing.Load() {
		f.failures.Add(1)
		return errors.New("broker unavailable: connection refused")
	}
	return f.Publisher.Publish(topic, msgs...)
}

func TestBrokerOutageIsRetriedNotDeadLettered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	flaky := &flakyPublisher{Publisher: gc}
	flaky.failing.Store(true)
	relay, _ := startRelay(t, bus.RelayConfig{Pool: pool, Publisher: flaky, MaxAttempts: 2})

	const n = 50
	for i := range n {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
			return []bus.Event{pulseCreated(uuid.New(), fmt.Sprint(i))}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	if f := flaky.failures.Load(); f < 4 {
		t.Fatalf("only %d publish attempts during the outage, want retries", f)
	}
	flaky.failing.Store(false)
	col.waitDistinct(n, 30*time.Second)
	// The collector sees an event before the relay counts it (the publish
	// returns after the subscriber's ack): wait for the counter, which
	// moves after every failed attempt's count (each lane fails before it
	// succeeds).
	waitFor(t, "the published counter", func() bool { return relay.Stats().Published >= n })

	dead, err := bus.NewDeadLetters(pool).Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dead != 0 || relay.Stats().DeadLettered != 0 {
		t.Fatalf("%d events dead-lettered for an outage (stats %+v), want 0", dead, relay.Stats())
	}
	if st := relay.Stats(); st.Published < n || st.Failed != flaky.failures.Load() {
		t.Fatalf("relay stats = %+v, want >= %d published and %d failed attempts", st, n, flaky.failures.Load())
	}
	t.Logf("publish failures during the outage: %d", flaky.failures.Load())
}

func TestMalformedRowIsDeadLetteredAndReplayed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	before := pulseCreated(uuid.New(), "before")
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{before}, nil }); err != nil {
		t.Fatal(err)
	}
	// A hand-inserted row that is no forwarder envelope.
	badID := uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, '{"hello": "world"}', '{"event_name": "edupulse.pulse.created"}', pg_current_xact_id())`, badID); err != nil {
		t.Fatal(err)
	}
	after := pulseCreated(uuid.New(), "after")
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{after}, nil }); err != nil {
		t.Fatal(err)
	}

	relay, _ := startRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, MaxAttempts: 3})
	col.waitDistinct(2, 10*time.Second)
	got, _ := col.snapshot()
	if got[0].ID != before.Envelope().ID.String() || got[1].ID != after.Envelope().ID.String() {
		t.Fatalf("deliveries = %+v, want before then after", got)
	}

	dls := bus.NewDeadLetters(pool)
	var list []bus.DeadLetter
	deadline := time.Now().Add(5 * time.Second)
	for len(list) == 0 && time.Now().Before(deadline) {
		var err error
		if list, err = dls.List(ctx, bus.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(list) != 1 {
		t.Fatalf("dead letters = %+v, want 1", list)
	}
	dl := list[0]
	if dl.MessageUUID != badID || dl.Attempts != 3 || dl.Lane != 0 || dl.EventName != "edupulse.pulse.created" {
		t.Fatalf("dead letter = %+v, want uuid %s, 3 attempts, lane 0", dl, badID)
	}
	if want := "malformed outbox row"; !strings.Contains(dl.Error, want) {
		t.Fatalf("dead letter error %q does not say %q", dl.Error, want)
	}
	waitFor(t, "the published counter", func() bool { return relay.Stats().Published >= 2 })
	if st := relay.Stats(); st.DeadLettered != 1 || st.Failed != 3 || st.Published != 2 {
		t.Fatalf("relay stats = %+v, want 1 dead-lettered after 3 failed attempts, 2 published", st)
	}
	if dl.FirstFailedAt.IsZero() || dl.DeadAt.Before(dl.FirstFailedAt) {
		t.Fatalf("dead letter times: first failed %v, dead %v", dl.FirstFailedAt, dl.DeadAt)
	}

	// Replaying it unfixed is refused; fixed, it is delivered.
	if err := dls.Replay(ctx, dl.ID); !errors.Is(err, bus.ErrMalformedOutboxRow) {
		t.Fatalf("replay of a malformed row: %v, want ErrMalformedOutboxRow", err)
	}
	fixed := pulseCreated(uuid.New(), "fixed")
	msg, err := gen.Registry().NewMessage(ctx, fixed)
	if err != nil {
		t.Fatal(err)
	}
	msg.UUID = badID
	payload, err := bus.WrapOutboxPayload(fixed.EventName(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := dls.Fix(ctx, dl.ID, payload); err != nil {
		t.Fatal(err)
	}
	if err := dls.Replay(ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	col.waitDistinct(3, 10*time.Second)
	_, seen := col.snapshot()
	if seen[badID] != 1 {
		t.Fatalf("replayed event delivered %d times, want 1", seen[badID])
	}
	if n, err := dls.Count(ctx); err != nil || n != 0 {
		t.Fatalf("dead letters after replay = %d, %v; want 0", n, err)
	}
	if err := dls.Discard(ctx, dl.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := dls.Get(ctx, dl.ID); !errors.Is(err, bus.ErrDeadLetterNotFound) {
		t.Fatalf("get discarded: %v, want ErrDeadLetterNotFound", err)
	}
}

// crashingPublisher publishes until a budget is spent, then blocks forever,
// as a process that dies mid-batch would.
type crashingPublisher struct {
	message.Publisher
	budget atomic.Int64
	hung   chan struct{}
	once   sync.Once
}

func (c *crashingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if c.budget.Add(-1) < 0 {
		c.once.Do(func() { close(c.hung) })
		select {} // never returns: the process is "dead"
	}
	return c.Publisher.Publish(topic, msgs...)
}

// TestRelayKilledMidBatchRedelivers kills a relay in the middle of its
// second batch: every event arrives, and what is published again is the
// part of that batch the dead relay had published (its first batch's
// offset was written), with the default BatchSize.
func TestRelayKilledMidBatchRedelivers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	const (
		n      = 2 * bus.BatchSizeDefault
		budget = bus.BatchSizeDefault + bus.BatchSizeDefault/2
	)
	var events []bus.Event
	for i := range n {
		events = append(events, pulseCreated(uuid.New(), fmt.Sprint(i)))
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events, nil }); err != nil {
		t.Fatal(err)
	}

	// The first relay dies after publishing budget events: its pool is
	// closed under it, so its second batch's transaction (and offset)
	// never commits.
	deadPool := newPool(t, pool, 5)
	crash := &crashingPublisher{Publisher: gc, hung: make(chan struct{})}
	crash.budget.Store(budget)
	r, err := bus.NewRelay(bus.RelayConfig{Pool: deadPool, Publisher: crash, Logger: testLogger(), ShutdownTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, kill := context.WithCancel(ctx)
	go func() { _ = r.Run(rctx) }()
	select {
	case <-crash.hung:
	case <-time.After(20 * time.Second):
		t.Fatal("first relay never reached its crash point")
	}
	kill()
	deadPool.Reset() // drop its connections: the open batch transaction rolls back

	runRelay(t, bus.RelayConfig{Pool: newPool(t, pool, 5), Publisher: gc})
	col.waitDistinct(n, 30*time.Second)
	got, seen := col.snapshot()
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("killed mid-batch: %d deliveries for %d events, %d duplicates", len(got), n, dups)
	if len(seen) != n {
		t.Fatalf("distinct = %d, want %d", len(seen), n)
	}
	if dups == 0 {
		t.Fatalf("no duplicates after a crash mid-batch: the crash did not happen where the test wants")
	}
	if want := budget - bus.BatchSizeDefault; dups > want {
		t.Fatalf("%d duplicates, want at most %d: only the crashed batch may be published again", dups, want)
	}
}

func TestCleanerKeepsUnrelayedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	var events []bus.Event
	for i := range 20 {
		events = append(events, pulseCreated(uuid.New(), fmt.Sprint(i)))
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events, nil }); err != nil {
		t.Fatal(err)
	}
	stop := runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, Retention: -1})
	col.waitDistinct(len(events), 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Ten more, never relayed.
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events[:0:0], nil }); err != nil {
		t.Fatal(err)
	}
	var pending []bus.Event
	for i := range 10 {
		pending = append(pending, pulseCreated(uuid.New(), fmt.Sprint("pending", i)))
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return pending, nil }); err != nil {
		t.Fatal(err)
	}
	r, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: gc, Retention: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	res, err := r.CleanOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deleted := res.Outbox
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM eventbus_outbox").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if deleted != int64(len(events)) || left != len(pending) {
		t.Fatalf("cleaner deleted %d and left %d, want %d deleted and the %d unrelayed left", deleted, left, len(events), len(pending))
	}
}

func TestRelayRefusesLanesTheDatabaseLacks(t *testing.T) {
	t.Parallel()
	pool, _ := newOutboxDB(t, 2)
	r, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: newGoChannel(t), Lanes: []int{1, 2}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "lane 2 does not exist: the database has 2 lanes") {
		t.Fatalf("Run = %v, want an error about lane 2", err)
	}
	if _, err := bus.NewRelay(bus.RelayConfig{}); err == nil || !strings.Contains(err.Error(), "nil Pool") || !strings.Contains(err.Error(), "nil Publisher") {
		t.Fatalf("NewRelay with an empty config = %v, want both problems named", err)
	}
}
