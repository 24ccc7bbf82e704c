package bus_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
)

// delaySink is a sink that takes delay per Publish, as a broker behind a
// network round trip would, and discards the message.
type delaySink struct {
	delay time.Duration
	n     atomic.Int64
	want  int64
	done  chan struct{}
	once  sync.Once
}

func (s *delaySink) Publish(string, ...*message.Message) error {
	time.Sleep(s.delay)
	if s.n.Add(1) == s.want {
		s.once.Do(func() { close(s.done) })
	}
	return nil
}

func (s *delaySink) Close() error { return nil }

// BenchmarkRelayDelayedSink drains a backlog of b.N events over 1,000
// aggregates, in 1 and 4 lanes, into a sink that takes a fixed delay per
// Publish (0 and 1 ms), with 1, 8 and 64 events of a lane in flight, and
// reports events/s. With one event in flight a lane relays at most 1/delay
// events per second; the pipeline removes that ceiling.
//
//	go test -run '^$' -bench RelayDelayedSink -benchtime 4000x ./bus/
func BenchmarkRelayDelayedSink(b *testing.B) {
	for _, lanes := range []int{1, 4} {
		for _, delay := range []time.Duration{0, time.Millisecond} {
			for _, depth := range []int{1, 8, 64} {
				b.Run(fmt.Sprintf("lanes=%d/delay=%v/inflight=%d", lanes, delay, depth), func(b *testing.B) {
					benchDelayedSink(b, lanes, delay, depth)
				})
			}
		}
	}
}

func benchDelayedSink(b *testing.B, lanes int, delay time.Duration, depth int) {
	ctx := context.Background()
	pool, ob := newOutboxDB(b, lanes)
	aggs := make([]uuid.UUID, 1000)
	for i := range aggs {
		aggs[i] = uuid.New()
	}
	for i := 0; i < b.N; i += 100 {
		var evs []bus.Event
		for j := i; j < min(i+100, b.N); j++ {
			evs = append(evs, pulseAnswered(aggs[j%len(aggs)]))
		}
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil }); err != nil {
			b.Fatal(err)
		}
	}
	sink := &delaySink{delay: delay, want: int64(b.N), done: make(chan struct{})}
	r, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: sink, Logger: testLogger(), MaxInFlight: depth, Retention: -1})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	wg.Go(func() { _ = r.Run(rctx) })
	select {
	case <-sink.done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("%d of %d events published after 10 minutes", sink.n.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
