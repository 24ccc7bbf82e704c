package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
)

// Regression (issue 9.6): a lane is read in transaction-id order, and
// PostgreSQL assigns a transaction its id at its first write. B writes
// first, A publishes e1 of aggregate X and commits, then B publishes e2 of
// X and commits: e2 was delivered before e1. Now B's rows take A's order
// key, and e1 comes first, without running B again.
func TestOrderIsCommitOrderWhenTheLaterWriterCommitsFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	agg := uuid.New()

	e1 := pulseCreated(agg, "e1")
	e2 := pulseAnswered(agg)
	var runs atomic.Int32
	bStarted, aCommitted := make(chan struct{}), make(chan struct{})
	bDone := make(chan error, 1)
	go func() {
		bDone <- ob.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
			if runs.Add(1) == 1 {
				// B's first write: it now has the smaller transaction id.
				if _, err := tx.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
					return nil, err
				}
				close(bStarted)
				<-aCommitted
			}
			return []bus.Event{e2}, nil
		})
	}()
	<-bStarted
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{e1}, nil }); err != nil {
		t.Fatal(err)
	}
	close(aCommitted)
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if runs.Load() != 1 {
		t.Fatalf("B ran %d times, want once", runs.Load())
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})
	col.waitDistinct(2, 15*time.Second)
	got, _ := col.snapshot()
	if got[0].ID != e1.Envelope().ID.String() || got[1].ID != e2.Envelope().ID.String() {
		t.Fatalf("delivered %s then %s, want e1 (committed first) then e2", got[0].Name, got[1].Name)
	}
}

// A transaction's order key becomes the head of every aggregate it
// published, not only of the one that raised it: B publishes X (whose head
// is A's, later than B) and Y, so its Y event sorts at A's key too; C,
// older than both, publishes Y after B committed, and must come after B's
// Y event. Had Y's head kept B's own id, C's event would sort first.
func TestOrderKeyCarriesOverToEveryAggregateOfTheTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	x, y := uuid.New(), uuid.New()
	begin := func() pgx.Tx {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		if _, err := tx.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	c := begin() // oldest
	b := begin()
	ax := pulseCreated(x, "A's x")
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ax}, nil }); err != nil {
		t.Fatal(err)
	}
	bx, by := pulseAnswered(x), pulseCreated(y, "B's y")
	if err := ob.Publish(ctx, b, bx, by); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cy := pulseAnswered(y)
	if err := ob.Publish(ctx, c, cy); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})
	col.waitDistinct(4, 15*time.Second)
	got, _ := col.snapshot()
	pos := map[string]int{}
	for i, d := range got {
		pos[d.ID] = i
	}
	id := func(ev bus.Event) int { return pos[ev.Envelope().ID.String()] }
	if !(id(ax) < id(bx) && id(by) < id(cy)) {
		t.Fatalf("delivery positions: A.x %d, B.x %d, B.y %d, C.y %d; want A.x < B.x and B.y < C.y (commit order)", id(ax), id(bx), id(by), id(cy))
	}
}

// When a transaction has published events of an aggregate and not yet
// committed, another transaction publishing the same aggregate waits for
// it, so that their commit order is their transaction-id order. Without
// the wait, A (the later transaction) committed first and was delivered
// second.
func TestOrderIsCommitOrderWhenTheEarlierWriterIsStillOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	agg := uuid.New()

	e1, e2 := pulseCreated(agg, "e1"), pulseAnswered(agg)
	b, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback(ctx)
	if err := ob.Publish(ctx, b, e1); err != nil {
		t.Fatal(err)
	}
	aConn := newPool(t, pool, 1)
	var aPID uint32
	if err := aConn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&aPID); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() {
		aDone <- ob.InTx(ctx, aConn, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{e2}, nil })
	}()
	// A either finished (it did not wait: the bug) or waits on B's lock.
	order := waitBlockedOrDone(t, pool, aPID, aDone)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if order == "A first" {
		t.Fatalf("A committed its event of the aggregate while B, which published one earlier, was still open")
	}
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})
	col.waitDistinct(2, 15*time.Second)
	got, _ := col.snapshot()
	if got[0].ID != e1.Envelope().ID.String() || got[1].ID != e2.Envelope().ID.String() {
		t.Fatalf("delivered %s then %s, want B's e1 then A's e2", got[0].Name, got[1].Name)
	}
}

// waitBlockedOrDone reports "A first" when A's transaction ended, or
// "A waits" once backend pid waits on a lock.
func waitBlockedOrDone(t *testing.T, pool *pgxpool.Pool, pid uint32, done chan error) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return "A first"
		default:
		}
		var waiting bool
		if err := pool.QueryRow(context.Background(),
			`SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1), false)`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return "A waits"
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("A neither finished nor waited on a lock")
	return ""
}

// Regression (issue 9.8): one Publish of more than 21,845 events of one
// lane failed (the extended protocol allows 65,535 parameters). 100,000
// events of one aggregate in one transaction now publish, and are relayed
// in order.
func TestPublishOfOneHundredThousandEventsIsRelayedInOrder(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("large transaction skipped in -short mode")
	}
	ctx := context.Background()
	// Its own cluster: its long transaction would hold back delivery in
	// every other test's database.
	pool, ob := newIsolatedOutboxDB(t, 4)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	const n = 100_000
	agg := uuid.New()
	events := make([]bus.Event, n)
	events[0] = pulseCreated(agg, "big")
	for i := 1; i < n; i++ {
		events[i] = pulseAnswered(agg)
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return events, nil }); err != nil {
		t.Fatal(err)
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, BatchSize: 1000})
	col.waitDistinct(n, 5*time.Minute)
	got, _ := col.snapshot()
	for i, d := range got[:n] {
		if d.ID != events[i].Envelope().ID.String() {
			t.Fatalf("delivery %d is %s, want %s (publish order)", i, d.ID, events[i].Envelope().ID)
		}
	}
}

// Per-aggregate order is commit order under REPEATABLE READ too. B's
// snapshot is taken before A publishes X and commits, so B cannot see A's
// head: its Publish of X fails with a serialization failure (retryable,
// as InTx would retry it), and run again it sorts after A.
func TestOrderIsCommitOrderUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	agg := uuid.New()
	e1 := pulseCreated(agg, "e1")
	e2 := pulseAnswered(agg)

	rr := pgx.TxOptions{IsoLevel: pgx.RepeatableRead}
	b, err := pool.BeginTx(ctx, rr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Rollback(ctx)
	if _, err := b.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil { // snapshot and id
		t.Fatal(err)
	}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{e1}, nil }); err != nil {
		t.Fatal(err)
	}
	err = ob.Publish(ctx, b, e2)
	if !bus.IsRetryable(err) {
		t.Fatalf("Publish in a REPEATABLE READ transaction older than A's commit: err = %v, want a retryable error", err)
	}
	if err := b.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginTxFunc(ctx, pool, rr, func(tx pgx.Tx) error { return ob.Publish(ctx, tx, e2) }); err != nil {
		t.Fatal(err)
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc})
	col.waitDistinct(2, 15*time.Second)
	got, _ := col.snapshot()
	if got[0].ID != e1.Envelope().ID.String() || got[1].ID != e2.Envelope().ID.String() {
		t.Fatalf("delivered %s then %s, want e1 (committed first) then e2", got[0].Name, got[1].Name)
	}
}
