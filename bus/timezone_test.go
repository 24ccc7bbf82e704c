package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
)

// zonePool opens another pool on like's database whose sessions run in the
// given time zone, as a process with PGTZ or `?timezone=` in its URL would.
func zonePool(t *testing.T, like *pgxpool.Pool, zone string) *pgxpool.Pool {
	t.Helper()
	cfg := like.Config().Copy()
	cfg.ConnConfig.RuntimeParams["timezone"] = zone
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pool in %s: %v", zone, err)
	}
	t.Cleanup(p.Close)
	var got string
	if err := p.QueryRow(context.Background(), "SHOW TimeZone").Scan(&got); err != nil || got != zone {
		t.Fatalf("pool in %s: session time zone %q, %v", zone, got, err)
	}
	return p
}

// TestSessionTimeZonesDoNotMatter: a producer, a relay and readers whose
// sessions run in different time zones agree on when an event was written:
// the generated ListXSince finds it, status reports small ages, and the
// cleaner deletes it only once it is older than the retention.
func TestSessionTimeZonesDoNotMatter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ producer, relay string }{
		{"America/New_York", "Asia/Tokyo"},
		{"Asia/Tokyo", "America/New_York"},
	} {
		t.Run(tc.producer+" to "+tc.relay, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			base, _ := newOutboxDB(t, 2)
			producer := zonePool(t, base, tc.producer)
			relayPool := zonePool(t, base, tc.relay)
			readers := []*pgxpool.Pool{zonePool(t, base, "UTC"), zonePool(t, base, "Asia/Kolkata")}

			ob, err := bus.NewOutbox(ctx, producer, bus.OutboxConfig{Registry: gen.Registry()})
			if err != nil {
				t.Fatal(err)
			}
			ev := pulseCreated(uuid.New(), "zones")
			lane := bus.LaneOf(ev.Envelope().AggregateID, ob.Lanes())
			if err := ob.InTx(ctx, producer, func(context.Context, pgx.Tx) ([]bus.Event, error) {
				return []bus.Event{ev}, nil
			}); err != nil {
				t.Fatal(err)
			}

			for _, reader := range readers {
				zone := reader.Config().ConnConfig.RuntimeParams["timezone"]
				q := gen.NewQueries(reader)
				got, err := q.ListPulseCreatedSince(ctx, time.Now().Add(-time.Minute), 10)
				if err != nil || len(got) != 1 || got[0].Envelope().ID != ev.Envelope().ID {
					t.Errorf("reader in %s: ListPulseCreatedSince(a minute ago) = %d events, %v; want the event", zone, len(got), err)
				}
				if got, err := q.ListPulseCreatedSince(ctx, time.Now().Add(time.Minute), 10); err != nil || len(got) != 0 {
					t.Errorf("reader in %s: ListPulseCreatedSince(in a minute) = %d events, %v; want none", zone, len(got), err)
				}
				st, err := observe.ReadStatus(ctx, reader, "")
				if err != nil {
					t.Fatal(err)
				}
				if l := st.Lanes[lane]; l.Backlog != 1 || l.OldestPending <= 0 || l.OldestPending > time.Minute {
					t.Errorf("reader in %s: lane %d status %+v; want backlog 1, oldest pending age within a minute", zone, lane, l)
				}
			}

			gc := newGoChannel(t)
			col := newCollector(t, gc)
			relay, stop := startRelay(t, bus.RelayConfig{Pool: relayPool, Publisher: gc, Retention: time.Hour})
			col.waitDistinct(1, 30*time.Second)
			waitFor(t, "the relay's acknowledgement", func() bool {
				st, err := observe.ReadStatus(ctx, readers[0], "")
				return err == nil && st.Backlog() == 0
			})
			if err := stop(); err != nil {
				t.Fatalf("relay: %v", err)
			}
			for _, reader := range readers {
				zone := reader.Config().ConnConfig.RuntimeParams["timezone"]
				st, err := observe.ReadStatus(ctx, reader, "")
				if err != nil {
					t.Fatal(err)
				}
				if l := st.Lanes[lane]; l.RelayedOffset == 0 || l.LastRelayedAge <= 0 || l.LastRelayedAge > time.Minute {
					t.Errorf("reader in %s: lane %d status %+v; want the last relayed event's age within a minute", zone, lane, l)
				}
			}

			// The relay's cleaner (its session in the relay's zone, retention
			// an hour) keeps the fresh row and deletes it once it is older.
			if res, err := relay.CleanOnce(ctx); err != nil || res.Outbox != 0 {
				t.Fatalf("cleaning a row relayed just now: deleted %d, %v; want 0", res.Outbox, err)
			}
			if _, err := base.Exec(ctx, `UPDATE eventbus_outbox SET created_at = created_at - interval '61 minutes'`); err != nil {
				t.Fatal(err)
			}
			if res, err := relay.CleanOnce(ctx); err != nil || res.Outbox != 1 {
				t.Fatalf("cleaning a row relayed 61 minutes ago: deleted %d, %v; want 1", res.Outbox, err)
			}
		})
	}
}
