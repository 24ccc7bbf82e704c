package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// discardExecer is an Execer that sends nothing anywhere: it leaves only
// Publish's own work (encoding, lanes, statements) in a benchmark.
type discardExecer struct{}

func (discardExecer) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, nil
}

// BenchmarkPublishEncode measures the Go side of Outbox.Publish per event,
// without a database: events of one aggregate, and events of as many
// aggregates as events (a backfill, a bulk import). The cost per event
// must not grow with the number of aggregates in one call.
func BenchmarkPublishEncode(b *testing.B) {
	ctx := context.Background()
	ob, err := bus.NewOutbox(ctx, nil, bus.OutboxConfig{Registry: gen.Registry(), Lanes: 4})
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		events     int
		aggregates string
	}{{1, "one"}, {10, "one"}, {10, "each"}, {20000, "each"}} {
		b.Run(fmt.Sprintf("events=%d/aggregates=%s", tc.events, tc.aggregates), func(b *testing.B) {
			events := make([]bus.Event, tc.events)
			agg := uuid.New()
			for i := range events {
				if tc.aggregates == "each" {
					agg = uuid.New()
				}
				events[i] = gen.NewPulseAnswered(agg, uuid.New(), uuid.New(), at)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := ob.Publish(ctx, discardExecer{}, events...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tc.events), "ns/event")
		})
	}
}
