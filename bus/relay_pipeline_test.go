package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
)

// TestRelayKeepsSeveralEventsOfALaneInFlight shows that a lane publishes
// several events at once: a sink that blocks every Publish until the test
// releases it sees one Publish per aggregate in flight together, and an
// aggregate's second event only after its first was confirmed. Before the
// pipeline a lane had one event in flight, and the sink never saw a second
// Publish while the first was blocked.
func TestRelayKeepsSeveralEventsOfALaneInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	const aggregates = 8
	var first, second []bus.Event
	for i := range aggregates {
		pulse := uuid.New()
		first = append(first, pulseCreated(pulse, fmt.Sprint(i)))
		second = append(second, pulseAnswered(pulse))
	}
	all := append(append([]bus.Event(nil), first...), second...)
	for _, evs := range [][]bus.Event{first, second} {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil }); err != nil {
			t.Fatal(err)
		}
	}

	entered := make(chan string, len(all))
	release := make(chan struct{})
	sink := brokertest.NewOrderSink(t, gc, all)
	sink.Before = func(msg *message.Message) error {
		entered <- msg.UUID
		<-release
		return nil
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: sink})

	// Every aggregate's first event is in flight at once, all blocked.
	firsts := map[string]bool{}
	for _, ev := range first {
		firsts[ev.Envelope().ID.String()] = true
	}
	timeout := time.After(20 * time.Second)
	for i := range aggregates {
		select {
		case id := <-entered:
			if !firsts[id] {
				t.Fatalf("Publish %d was event %s, want the first events of the aggregates only", i+1, id)
			}
		case <-timeout:
			t.Fatalf("%d Publish calls in flight at once after 20s, want %d (one per aggregate)", i, aggregates)
		}
	}
	close(release)
	col.waitDistinct(len(all), 20*time.Second)
	got, _ := col.snapshot()
	assertPerAggregateOrder(t, got)
	if m := sink.MaxConcurrent(); m < aggregates {
		t.Fatalf("at most %d Publish calls in flight, want %d", m, aggregates)
	}
}

// TestPipelinedBatchSurvivesAFailureInTheMiddle fails one event in the
// middle of a pipelined batch for longer than its AckDeadline, while the
// events of other aggregates are in flight: the lane gives the batch up
// and reads it again from the failed event. No event is lost, none is
// dead-lettered, and no aggregate's event is sent before the earlier ones
// were confirmed (the sink checks it at every Publish), also for the
// events confirmed after the failed one and published again.
func TestPipelinedBatchSurvivesAFailureInTheMiddle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)

	const aggregates, perAggregate = 30, 6
	var all []bus.Event
	pulses := make([]uuid.UUID, aggregates)
	for i := range pulses {
		pulses[i] = uuid.New()
	}
	for seq := range perAggregate {
		var tx []bus.Event
		for i, p := range pulses {
			if seq == 0 {
				tx = append(tx, pulseCreated(p, fmt.Sprint(i)))
			} else {
				tx = append(tx, pulseAnswered(p))
			}
		}
		all = append(all, tx...)
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return tx, nil }); err != nil {
			t.Fatal(err)
		}
	}

	// The third event of one aggregate fails until the test lets it
	// through, after its batch was given up: within one AckDeadline of
	// 300 ms the backoff (at least 10, 20, 40 and then 50 ms) allows at
	// most 8 attempts, so the 12th attempt is in a later batch.
	victim := all[2*aggregates+7].Envelope().ID.String()
	var mu sync.Mutex
	failures := 0
	healed := make(chan struct{})
	failedEnough := make(chan struct{})
	sink := brokertest.NewOrderSink(t, gc, all)
	sink.Before = func(msg *message.Message) error {
		if msg.UUID != victim {
			return nil
		}
		select {
		case <-healed:
			return nil
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		failures++
		if failures == 12 {
			close(failedEnough)
		}
		return errors.New("broker unavailable for a moment")
	}
	relay, _ := startRelay(t, bus.RelayConfig{Pool: pool, Publisher: sink,
		AckDeadline: 300 * time.Millisecond, BackoffInitial: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	select {
	case <-failedEnough:
	case <-time.After(20 * time.Second):
		t.Fatal("the victim was not tried 12 times within 20s")
	}
	close(healed)
	col.waitDistinct(len(all), 30*time.Second)
	got, seen := col.snapshot()
	assertPerAggregateOrder(t, got)
	if len(seen) != len(all) {
		t.Fatalf("%d distinct events delivered, want %d", len(seen), len(all))
	}
	if st := relay.Stats(); st.DeadLettered != 0 {
		t.Fatalf("stats %+v: a transient failure was dead-lettered", st)
	}
	if m := sink.MaxConcurrent(); m < 2 {
		t.Fatalf("at most %d Publish calls in flight: the relay did not pipeline", m)
	}
	t.Logf("%d deliveries of %d events (%d duplicates), %d Publish calls at most in flight",
		len(got), len(all), len(got)-len(seen), sink.MaxConcurrent())
}
