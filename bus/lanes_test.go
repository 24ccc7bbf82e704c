package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/schema"
)

// Regression (issue 9.9): after schema.Migrate grew the outbox from 2 to 4
// lanes, a running relay delivered none of the events of the new lanes,
// and an Outbox made earlier kept hashing over 2 lanes. Growing is online
// now: producers and relays follow without a restart, and every
// aggregate's events stay in order across the change.
func TestLanesGrowWhileProducersAndRelaysRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})

	aggs := make([]uuid.UUID, 40)
	for i := range aggs {
		aggs[i] = uuid.New()
	}
	publish := func(round int) {
		t.Helper()
		for i, agg := range aggs {
			ev := bus.Event(pulseAnswered(agg))
			if round == 0 {
				ev = pulseCreated(agg, fmt.Sprint(i))
			}
			if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0)
	col.waitDistinct(len(aggs), 15*time.Second)
	// The relay acknowledges a batch after its last publish: wait until
	// nothing is pending, as Migrate requires.
	var res schema.Result
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		res, err = schema.Migrate(ctx, pool, schema.Options{Lanes: 4})
		if err == nil {
			break
		}
		if !errors.Is(err, schema.ErrBacklog) || time.Now().After(deadline) {
			t.Fatalf("grow lanes: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res.Lanes != 4 {
		t.Fatalf("lanes after migrate = %d, want 4", res.Lanes)
	}
	publish(1)
	publish(2)
	if ob.Lanes() != 4 {
		t.Fatalf("the outbox hashes over %d lanes after the change, want 4", ob.Lanes())
	}
	var newLanes int
	for _, agg := range aggs {
		if bus.LaneOf(agg.String(), 4) >= 2 {
			newLanes++
		}
	}
	if newLanes == 0 {
		t.Fatal("no aggregate hashes to a new lane: pick more aggregates")
	}
	col.waitDistinct(3*len(aggs), 30*time.Second)
	got, _ := col.snapshot()
	assertPerAggregateOrder(t, got)
	var stored [4]int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE lane = 2), count(*) FILTER (WHERE lane = 3) FROM eventbus_outbox`).Scan(&stored[2], &stored[3]); err != nil {
		t.Fatal(err)
	}
	if stored[2]+stored[3] != 2*newLanes {
		t.Fatalf("new lanes hold %d rows, want %d", stored[2]+stored[3], 2*newLanes)
	}
}

// Growing the lanes while events wait to be relayed is refused with a
// clear error: an aggregate's waiting event in its old lane could be
// overtaken by its next event in its new lane.
func TestLanesDoNotGrowOverABacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
		return []bus.Event{pulseCreated(uuid.New(), "waiting")}, nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 4})
	if !errors.Is(err, schema.ErrBacklog) {
		t.Fatalf("migrate over a backlog = %v, want ErrBacklog", err)
	}
	if n, err := schema.Lanes(ctx, pool); err != nil || n != 2 {
		t.Fatalf("lanes = %d, %v; want 2 unchanged", n, err)
	}
}
