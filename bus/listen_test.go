package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/schema"
)

// TestListenReconnects kills the relay's LISTEN connection: the relay
// listens again, and NOTIFY wakes it as before. Polling is set to a minute,
// so a delivery within the test's wait comes from a notification.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, PollInterval: time.Minute})

	listeners := func() (pids []int32) {
		rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN eventbus_outbox'`)
		if err != nil {
			t.Fatal(err)
		}
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	waitFor(t, "the relay to listen", func() bool { return len(listeners()) == 1 })
	old := listeners()[0]
	if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relay to listen again", func() bool {
		pids := listeners()
		return len(pids) == 1 && pids[0] != old
	})

	ev := pulseCreated(uuid.New(), "after reconnect")
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
		t.Fatal(err)
	}
	col.waitDistinct(1, 20*time.Second) // well below the one-minute poll
}

// With schema.WakeupPoll the lane tables send no NOTIFY; the relay notices
// and polls, and events are still delivered.
func TestPollOnlySchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Wakeup: schema.WakeupPoll}); err != nil {
		t.Fatal(err)
	}
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, PollInterval: 200 * time.Millisecond})
	var listening int
	waitFor(t, "no LISTEN connection", func() bool {
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN eventbus_outbox'`).Scan(&listening)
		return listening == 0
	})
	ev := pulseCreated(uuid.New(), "polled")
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
		t.Fatal(err)
	}
	col.waitDistinct(1, 10*time.Second)
}
