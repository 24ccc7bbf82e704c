package brokertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// RunOutage checks that the relay's pipeline loses nothing and keeps every
// aggregate's order when the broker fails in the middle of a pipelined
// batch. The relay runs with its default configuration (several events of
// a lane in flight), through a publisher that fails one event once, in the
// middle of the first events; then, while events are in flight, the broker
// restarts (restart returns once it accepts connections again), and more
// events are written. The relay must never send an event while an earlier
// event of its aggregate is in flight or not yet confirmed (checked as
// each Publish starts), must get every event confirmed and acknowledge
// every outbox row, and must have had at least two Publish calls in flight
// at once. Then a consumer group, subscribed before the first publish and
// reading only once the relay is done, must receive every event, each
// aggregate's in order (first deliveries; duplicates are allowed).
//
// The consumer does not run across the restart: the clients' own
// reconnection is not under test (watermill-amqp's and watermill-nats'
// subscribers have data races when the server goes away).
//
// brokerURL must survive the restart (same address, durable topics and
// groups).
func RunOutage(t *testing.T, brokerURL string, restart func(tb testing.TB)) {
	const timeout = 120 * time.Second
	ctx := context.Background()
	pool := newDB(t)
	prefix := "t" + uuid.NewString()[:8] + "_"
	routing := bus.RouteByAggregateType(prefix)
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: routing})
	if err != nil {
		t.Fatal(err)
	}
	topics, err := routing.Topics(gen.Registry())
	if err != nil {
		t.Fatal(err)
	}
	group := prefix + "check"
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The group's queues or consumers exist before the first publish.
	subscribeAll(t, brokerURL, group, topics, logger, nil)

	evs := edupulseScenario(24, 8)
	half := len(evs) / 2
	// The broker fails one event, once, in the middle of the first ones.
	victim := evs[3].Envelope().ID.String()
	failed := make(chan struct{})
	var failOnce sync.Once
	sink := NewOrderSink(t, nil, evs)
	sink.Before = func(msg *message.Message) error {
		fail := false
		if msg.UUID == victim {
			failOnce.Do(func() { fail = true; close(failed) })
		}
		if fail {
			return errors.New("brokertest: the broker failed this one event")
		}
		return nil
	}
	b, err := broker.Open(ctx, brokerURL, broker.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sink.Publisher = b.Publisher()
	relay, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: sink, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	stopRelay := sync.OnceValue(func() error { cancel(); return <-done })
	defer func() { _ = stopRelay() }()

	write := func(evs []bus.Event) {
		for i := 0; i < len(evs); i += 7 {
			batch := evs[i:min(i+7, len(evs))]
			if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil }); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	write(evs[:half])
	select {
	case <-failed:
	case <-time.After(timeout):
		t.Fatal("the victim event was never published")
	}
	// Restart while the first half is still being relayed.
	pollUntil(t, timeout, "a quarter of the first half confirmed", func() bool { return sink.Confirmed() >= half/4 })
	restart(t)
	write(evs[half:])
	pollUntil(t, timeout, "every event confirmed", func() bool { return sink.Confirmed() == len(evs) })
	pollUntil(t, timeout, "every outbox row acknowledged", func() bool {
		var backlog int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM (`+backlogSQL(4)+`) b`).Scan(&backlog)
		return err == nil && backlog == 0
	})
	if err := stopRelay(); err != nil {
		t.Errorf("relay: %v", err)
	}

	// The group receives every event, each aggregate's in order.
	got := subscribeAll(t, brokerURL, group, topics, logger, evs)
	pos := map[string]int{}
	for i, ev := range evs {
		pos[ev.Envelope().ID.String()] = i
	}
	last := map[string]int{}
	seen := map[string]bool{}
	for _, m := range got {
		if seen[m.UUID] {
			continue
		}
		seen[m.UUID] = true
		agg := m.Metadata.Get(bus.MetadataAggregateID)
		if p, ok := last[agg]; ok && pos[m.UUID] < p {
			t.Errorf("aggregate %s: event #%d received after #%d", agg, pos[m.UUID], p)
		}
		last[agg] = pos[m.UUID]
	}
	calls, failures := sink.Calls()
	t.Logf("%d events, %d Publish calls (%d failed), at most %d in flight at once; %d messages received",
		len(evs), calls, failures, sink.MaxConcurrent(), len(got))
	if m := sink.MaxConcurrent(); m < 2 {
		t.Fatalf("at most %d Publish call in flight: the relay did not pipeline", m)
	}
}

// backlogSQL selects the outbox rows of lanes 0..lanes-1 that the default
// relay group has not acknowledged.
func backlogSQL(lanes int) string {
	var parts []string
	for l := range lanes {
		parts = append(parts, fmt.Sprintf(`SELECT 1 FROM %s r, eventbus_offsets o
			WHERE o.consumer_group = '%s'
			AND (r.transaction_id, r."offset") > (o.last_processed_transaction_id, o.offset_acked)`,
			pgx.Identifier{"watermill_" + schema.LaneTopic(l)}.Sanitize(), bus.LaneConsumerGroup(bus.ConsumerGroupDefault, l)))
	}
	return strings.Join(parts, " UNION ALL ")
}

// subscribeAll subscribes group to topics on a broker of its own. With no
// events, it returns once subscribed (the group's queues or consumers then
// exist). Otherwise it reads until every event arrived, acknowledging each
// message, then until no message came for a second (duplicates may
// follow), and returns the messages in the order received.
func subscribeAll(t *testing.T, url, group string, topics []string, logger *slog.Logger, evs []bus.Event) []*message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.Open(ctx, url, broker.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer cancel()
	sub, err := b.Subscriber(group)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *message.Message)
	for _, topic := range topics {
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatalf("subscribe %s: %v", topic, err)
		}
		go func() {
			for m := range ch {
				m.Ack()
				select {
				case in <- m:
				case <-ctx.Done():
				}
			}
		}()
	}
	if len(evs) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, ev := range evs {
		want[ev.Envelope().ID.String()] = true
	}
	var got []*message.Message
	seen := map[string]bool{}
	deadline := time.After(120 * time.Second)
	for len(seen) < len(want) {
		select {
		case m := <-in:
			got = append(got, m)
			if want[m.UUID] {
				seen[m.UUID] = true
			}
		case <-deadline:
			t.Fatalf("group %s received %d of %d events", group, len(seen), len(want))
		}
	}
	// Stop only once quiet: a subscriber closed while a message arrives
	// races in watermill-nats.
	for {
		select {
		case m := <-in:
			got = append(got, m)
			continue
		case <-time.After(time.Second):
		}
		break
	}
	return got
}

// pollUntil polls cond until it holds, failing the test after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
