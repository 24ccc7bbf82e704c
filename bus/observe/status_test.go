package observe_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/internal/db"
)

const statusLanes = 4

// laneTable is the table of a lane.
func laneTable(lane int) string { return fmt.Sprintf("watermill_eventbus_lane_%d", lane) }

// setPosition acknowledges, for group's lane, the rows of the lane up to
// the one at index i in relay order (i < 0: none of them, the row is
// deleted), with offsetAcked NULL when nullOffset.
func setPosition(t *testing.T, pool *pgxpool.Pool, group string, lane, i int, nullOffset bool) {
	t.Helper()
	ctx := context.Background()
	cg := group + "/" + strconv.Itoa(lane)
	if i < 0 {
		if _, err := pool.Exec(ctx, `DELETE FROM eventbus_offsets WHERE consumer_group = $1`, cg); err != nil {
			t.Fatal(err)
		}
		return
	}
	var off *int64
	var tx string
	// The text column is named tx: named transaction_id, ORDER BY would
	// sort the text.
	if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT "offset", transaction_id::text AS tx FROM %s ORDER BY transaction_id, "offset" OFFSET $1 LIMIT 1`,
		pgx.Identifier{laneTable(lane)}.Sanitize()), i).Scan(&off, &tx); err != nil {
		t.Fatalf("row %d of lane %d: %v", i, lane, err)
	}
	if nullOffset {
		off = nil
	}
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ($1, $2, $3::xid8) ON CONFLICT (consumer_group) DO UPDATE
		SET offset_acked = excluded.offset_acked, last_processed_transaction_id = excluded.last_processed_transaction_id`,
		cg, off, tx); err != nil {
		t.Fatal(err)
	}
}

// laneRows returns the number of rows of each lane.
func laneRows(t *testing.T, pool *pgxpool.Pool) [statusLanes]int64 {
	t.Helper()
	var n [statusLanes]int64
	for lane := range n {
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+laneTable(lane)).Scan(&n[lane]); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// checkAgainstCount compares ReadStatus with the statement that counted
// every stored row before it scaled (db.LaneStatus): the backlog and the
// oldest pending age must be the same, and so must stored rows wherever
// ReadStatus says they are exact.
func checkAgainstCount(t *testing.T, pool *pgxpool.Pool, group string) observe.Status {
	t.Helper()
	ctx := context.Background()
	st, err := observe.ReadStatus(ctx, pool, group)
	if err != nil {
		t.Fatal(err)
	}
	want, err := db.New().LaneStatus(ctx, pool, group)
	if err != nil {
		t.Fatal(err)
	}
	byLane := map[int32]db.LaneStatusRow{}
	for _, r := range want {
		byLane[r.Lane] = r
	}
	for _, l := range st.Lanes {
		w := byLane[int32(l.Lane)]
		if l.Backlog != w.Backlog {
			t.Errorf("group %s, lane %d: backlog %d, counting every row gives %d", group, l.Lane, l.Backlog, w.Backlog)
		}
		if wantAge := time.Duration(w.OldestPendingAgeSeconds * float64(time.Second)); l.OldestPending < wantAge-time.Second || l.OldestPending > wantAge+time.Second {
			t.Errorf("group %s, lane %d: oldest pending %v, counting every row gives %v", group, l.Lane, l.OldestPending, wantAge)
		}
		if !l.StoredEstimated && l.Stored != w.Stored {
			t.Errorf("group %s, lane %d: stored %d (exact), counting every row gives %d", group, l.Lane, l.Stored, w.Stored)
		}
	}
	return st
}

// TestReadStatusBacklogIsExact checks ReadStatus's backlog against a count
// of every row, for a lane the group never relayed, positions at the
// start, inside and at the end of a transaction's rows, past the last row,
// and an acknowledged offset that is NULL.
func TestReadStatusBacklogIsExact(t *testing.T) {
	ctx := context.Background()
	pool, ob := newOutboxDB(t, statusLanes)
	for range 12 { // transactions of several events, over aggregates of every lane
		evs := make([]bus.Event, 10)
		for i := range evs {
			evs[i] = pulseCreated("status")
		}
		publish(t, ctx, pool, ob, evs...)
	}
	rows := laneRows(t, pool)
	for lane, n := range rows {
		if n < 3 {
			t.Fatalf("lane %d holds %d rows; the test wants at least 3 in each", lane, n)
		}
	}
	// Never relayed: everything is backlog.
	st := checkAgainstCount(t, pool, "never")
	if st.Backlog() != 120 {
		t.Errorf("backlog of a group that never relayed = %d, want 120", st.Backlog())
	}
	for lane, n := range rows {
		for _, i := range []int{0, 1, int(n) / 2, int(n) - 2, int(n) - 1} {
			setPosition(t, pool, "g", lane, i, false)
			st := checkAgainstCount(t, pool, "g")
			if want := n - int64(i) - 1; st.Lanes[lane].Backlog != want {
				t.Errorf("lane %d acknowledged up to row %d of %d: backlog %d, want %d", lane, i, n, st.Lanes[lane].Backlog, want)
			}
			if st.Lanes[lane].StoredEstimated || st.Lanes[lane].Stored != n {
				t.Errorf("lane %d: stored %d (estimated %v), want exactly %d", lane, st.Lanes[lane].Stored, st.Lanes[lane].StoredEstimated, n)
			}
		}
		setPosition(t, pool, "g", lane, int(n)/2, true) // the rows of that transaction count as acknowledged
		checkAgainstCount(t, pool, "g")
	}
	// Past the last row.
	if _, err := pool.Exec(ctx, `UPDATE eventbus_offsets SET offset_acked = offset_acked + 1000,
		last_processed_transaction_id = (last_processed_transaction_id::text::bigint + 1000)::text::xid8 WHERE consumer_group LIKE 'g/%'`); err != nil {
		t.Fatal(err)
	}
	if st := checkAgainstCount(t, pool, "g"); st.Backlog() != 0 {
		t.Errorf("backlog past the last row = %d, want 0", st.Backlog())
	}
}

// fillLane adds n rows to a lane table, copies of its first row, in one
// transaction.
func fillLane(t *testing.T, pool *pgxpool.Pool, lane, n int) {
	t.Helper()
	table := pgx.Identifier{laneTable(lane)}.Sanitize()
	if _, err := pool.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %s (uuid, created_at, payload, metadata, transaction_id)
		SELECT gen_random_uuid()::text, o.created_at, o.payload, o.metadata, pg_current_xact_id()
		FROM (SELECT * FROM %s ORDER BY transaction_id, "offset" LIMIT 1) o, generate_series(1, $1)`, table, table), n); err != nil {
		t.Fatalf("fill lane %d: %v", lane, err)
	}
}

// tableReads returns the rows read from a table so far in the transaction
// tx, sequentially or through an index.
func tableReads(t *testing.T, tx pgx.Tx, table string) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(context.Background(), `SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint
		FROM pg_stat_xact_user_tables WHERE relname = $1`, table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReadStatusReadsTheBacklogNotTheStoredRows fills a lane table well
// above ExactCountMaxBytes and checks that ReadStatus reads its backlog
// rows, not every row stored: the rows it reads (pg_stat_xact_user_tables,
// in the transaction it runs in) stay within the backlog and a few more,
// the backlog stays exact and the stored rows are an estimate.
func TestReadStatusReadsTheBacklogNotTheStoredRows(t *testing.T) {
	ctx := context.Background()
	pool, ob := newOutboxDB(t, statusLanes)
	for range 40 {
		publish(t, ctx, pool, ob, pulseCreated("status"))
	}
	const big, backlog = 6000, 37
	fillLane(t, pool, 0, big)
	n := laneRows(t, pool)
	var size int64
	if err := pool.QueryRow(ctx, "SELECT pg_relation_size($1)", laneTable(0)).Scan(&size); err != nil {
		t.Fatal(err)
	}
	if size <= observe.ExactCountMaxBytes {
		t.Fatalf("lane 0 takes %d bytes, want more than %d", size, observe.ExactCountMaxBytes)
	}
	// What autovacuum does after such a fill (within a minute by default).
	if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	for lane := range n {
		setPosition(t, pool, bus.ConsumerGroupDefault, lane, int(n[lane])-1-min(backlog, int(n[lane])-1), false)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	before := tableReads(t, tx, laneTable(0))
	st, err := observe.ReadStatus(ctx, tx, "")
	if err != nil {
		t.Fatal(err)
	}
	read := tableReads(t, tx, laneTable(0)) - before
	if read > backlog+10 {
		t.Errorf("ReadStatus read %d rows of lane 0, which stores %d with a backlog of %d: want at most the backlog and a few more", read, n[0], backlog)
	}
	t.Logf("lane 0: %d rows stored, backlog %d; ReadStatus read %d of its rows", n[0], st.Lanes[0].Backlog, read)
	checkAgainstCount(t, pool, bus.ConsumerGroupDefault)
	if st.Lanes[0].Backlog != backlog {
		t.Errorf("lane 0 backlog = %d, want %d", st.Lanes[0].Backlog, backlog)
	}
	l := st.Lanes[0]
	if !l.StoredEstimated || l.Stored < n[0]*9/10 || l.Stored > n[0]*11/10 {
		t.Errorf("lane 0: stored %d (estimated %v), want an estimate within 10%% of %d", l.Stored, l.StoredEstimated, n[0])
	}
	for _, l := range st.Lanes[1:] {
		if l.StoredEstimated || l.Stored != n[l.Lane] {
			t.Errorf("lane %d: stored %d (estimated %v), want exactly %d", l.Lane, l.Stored, l.StoredEstimated, n[l.Lane])
		}
	}

	// The collector says which counts are estimates.
	reg := prometheus.NewRegistry()
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			got[f.GetName()+"{"+label(m, "lane")+"}"] = value(m)
		}
	}
	for lane := range statusLanes {
		want := 0.0
		if lane == 0 {
			want = 1
		}
		if k := fmt.Sprintf("eventbus_outbox_rows_estimated{%d}", lane); got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if k := "eventbus_outbox_backlog{0}"; got[k] != backlog {
		t.Errorf("%s = %v, want %d", k, got[k], backlog)
	}
}

// TestReadStatusEstimatesALargeInbox checks that the inbox rows of each
// consumer group are exact in a small inbox and the planner's estimates in
// one above ExactCountMaxBytes.
func TestReadStatusEstimatesALargeInbox(t *testing.T) {
	ctx := context.Background()
	pool, _ := newOutboxDB(t, statusLanes)
	insert := func(group string, n int) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO eventbus_inbox (consumer_group, event_id)
			SELECT $1, gen_random_uuid() FROM generate_series(1, $2)`, group, n); err != nil {
			t.Fatal(err)
		}
	}
	insert("badges", 3)
	insert("notifications", 2)
	st, err := observe.ReadStatus(ctx, pool, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []observe.InboxStatus{{ConsumerGroup: "badges", Rows: 3}, {ConsumerGroup: "notifications", Rows: 2}}; fmt.Sprint(st.Inbox) != fmt.Sprint(want) {
		t.Errorf("small inbox: %+v, want %+v", st.Inbox, want)
	}
	insert("badges", 20_000)
	insert("notifications", 10_000)
	if _, err := pool.Exec(ctx, "ANALYZE eventbus_inbox"); err != nil {
		t.Fatal(err)
	}
	if st, err = observe.ReadStatus(ctx, pool, ""); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"badges": 20_003, "notifications": 10_002}
	if len(st.Inbox) != 2 {
		t.Fatalf("large inbox: %+v, want two groups", st.Inbox)
	}
	for _, g := range st.Inbox {
		w := want[g.ConsumerGroup]
		if !g.Estimated || g.Rows < w*8/10 || g.Rows > w*12/10 {
			t.Errorf("large inbox, group %s: %d rows (estimated %v), want an estimate within 20%% of %d", g.ConsumerGroup, g.Rows, g.Estimated, w)
		}
	}
}

// TestReadStatusInACallersTransaction: ReadStatus works in the caller's
// transaction (in a savepoint) and leaves it as it was, settings included.
func TestReadStatusInACallersTransaction(t *testing.T) {
	ctx := context.Background()
	pool, ob := newOutboxDB(t, statusLanes)
	publish(t, ctx, pool, ob, pulseCreated("a"), pulseCreated("b"))
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	settings := func() string {
		var s string
		if err := tx.QueryRow(ctx, `SELECT current_setting('jit') || ' ' || current_setting('max_parallel_workers_per_gather')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := settings()
	st, err := observe.ReadStatus(ctx, tx, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog() != 2 {
		t.Errorf("backlog %d, want 2", st.Backlog())
	}
	if after := settings(); after != before {
		t.Errorf("settings in the caller's transaction: %q after ReadStatus, %q before", after, before)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the caller's transaction after ReadStatus: %v", err)
	}
}
