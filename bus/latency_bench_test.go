package bus_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// BenchmarkCommitToDelivery measures the time from a producer's commit to
// the broker subscriber's receipt of the event, one event at a time, with
// the NOTIFY wake-up and with polling only (PollInterval 100ms). It reports
// p50 and p99 in milliseconds besides ns/op.
//
//	go test -run '^$' -bench CommitToDelivery -benchtime 200x ./bus/
func BenchmarkCommitToDelivery(b *testing.B) {
	for _, mode := range []struct {
		name    string
		disable bool
	}{{"notify", false}, {"poll100ms", true}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			pool, ob := newOutboxDB(b, 4)
			gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			defer gc.Close()
			received := make(chan string, 16)
			sub, err := gc.Subscribe(ctx, gen.PulseCreated{}.EventName())
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				for m := range sub {
					m.Ack()
					received <- m.UUID
				}
			}()
			r, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: gc, Logger: testLogger(),
				DisableNotify: mode.disable, PollInterval: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { _ = r.Run(rctx) })
			defer func() { cancel(); wg.Wait() }()
			time.Sleep(200 * time.Millisecond) // relay subscribed and listening

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev := pulseCreated(uuid.New(), "bench")
				if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				select {
				case id := <-received:
					if id != ev.Envelope().ID.String() {
						b.Fatalf("received %s, want %s", id, ev.Envelope().ID)
					}
				case <-time.After(10 * time.Second):
					b.Fatal("event not delivered within 10s")
				}
				lat = append(lat, time.Since(committed))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
		})
	}
}
