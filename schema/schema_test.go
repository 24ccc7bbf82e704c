package schema_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrateTwiceIsANoop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)

	if _, err := schema.Lanes(ctx, pool); !errors.Is(err, schema.ErrNotMigrated) {
		t.Fatalf("Lanes before Migrate: %v, want ErrNotMigrated", err)
	}
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	first, err := schema.Migrate(ctx, pool, schema.Options{})
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	var want []int
	for _, m := range ms {
		want = append(want, m.Version)
	}
	if !slices.Equal(first.Applied, want) || first.Lanes != schema.LanesDefault {
		t.Fatalf("first migrate = %+v, want applied %v and %d lanes", first, want, schema.LanesDefault)
	}
	second, err := schema.Migrate(ctx, pool, schema.Options{})
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second.Applied) != 0 || second.Lanes != schema.LanesDefault {
		t.Fatalf("second migrate = %+v, want nothing applied", second)
	}
	var tables int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'watermill_eventbus_lane_%'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != schema.LanesDefault {
		t.Fatalf("%d lane tables, want %d", tables, schema.LanesDefault)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2})
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
	if n, err := schema.Lanes(ctx, pool); err != nil || n != 2 {
		t.Fatalf("lanes = %d, %v; want 2", n, err)
	}
}

func TestMigrateExistingDatabaseKeepsDataAndGrowsLanes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	// An existing application database with tables of its own.
	if _, err := pool.Exec(ctx, `CREATE TABLE pulses (id int primary key); INSERT INTO pulses VALUES (1), (2)`); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_1 (uuid, payload, transaction_id) VALUES ('x', '{}', pg_current_xact_id())`); err != nil {
		t.Fatal(err)
	}
	// Lanes grow only once every relay group has relayed every row.
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 3}); !errors.Is(err, schema.ErrBacklog) {
		t.Fatalf("grow lanes over an unrelayed row: %v, want ErrBacklog", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_relay_groups (consumer_group) VALUES ('g');
		INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id)
		SELECT 'g/1', "offset", transaction_id FROM watermill_eventbus_lane_1`); err != nil {
		t.Fatal(err)
	}
	res, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 3})
	if err != nil {
		t.Fatalf("grow lanes: %v", err)
	}
	if res.Lanes != 3 {
		t.Fatalf("lanes = %d, want 3", res.Lanes)
	}
	var pulses, lane1, viaParent int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pulses), (SELECT count(*) FROM watermill_eventbus_lane_1),
		(SELECT count(*) FROM eventbus_outbox WHERE lane = 1)`).Scan(&pulses, &lane1, &viaParent); err != nil {
		t.Fatal(err)
	}
	if pulses != 2 || lane1 != 1 || viaParent != 1 {
		t.Fatalf("after migrate: pulses %d, lane 1 rows %d, parent sees %d; want 2, 1, 1", pulses, lane1, viaParent)
	}
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 1}); err == nil {
		t.Fatal("shrinking lanes succeeded, want an error")
	}
	if err := (schema.Options{Lanes: schema.LanesMax + 1}).Validate(); err == nil {
		t.Fatal("Validate accepted too many lanes")
	}
}

func TestLaneTopic(t *testing.T) {
	if got := schema.LaneTopic(3); got != "eventbus_lane_3" {
		t.Fatalf("LaneTopic(3) = %q", got)
	}
}

func TestQueriesNamingALaneReadOnlyItsTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 4}); err != nil {
		t.Fatalf("migrate again (constraints exist): %v", err)
	}
	rows, err := pool.Query(ctx, `EXPLAIN (FORMAT TEXT) SELECT count(*) FROM eventbus_outbox WHERE lane = 2`)
	if err != nil {
		t.Fatal(err)
	}
	var full []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		full = append(full, line)
	}
	text := strings.Join(full, "\n")
	for lane, want := range map[string]bool{"lane_0": false, "lane_1": false, "lane_2": true, "lane_3": false} {
		if got := strings.Contains(text, "watermill_eventbus_"+lane); got != want {
			t.Errorf("plan reads %s: %v, want %v\n%s", lane, got, want, text)
		}
	}
}

func TestWakeupSetting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	triggers := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'eventbus_notify' AND NOT tgisinternal`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	check := func(opts schema.Options, wantNotify bool, wantTriggers int) {
		t.Helper()
		res, err := schema.Migrate(ctx, pool, opts)
		if err != nil {
			t.Fatalf("migrate %+v: %v", opts, err)
		}
		got, err := schema.Notify(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if res.Notify != wantNotify || got != wantNotify || triggers() != wantTriggers {
			t.Fatalf("after %+v: result notify %v, setting %v, %d triggers; want %v and %d", opts, res.Notify, got, triggers(), wantNotify, wantTriggers)
		}
	}
	check(schema.Options{Lanes: 2}, true, 2)                    // a new database notifies
	check(schema.Options{Wakeup: schema.WakeupPoll}, false, 0)  // switched off
	check(schema.Options{}, false, 0)                           // unchanged
	check(schema.Options{Lanes: 3}, false, 0)                   // new lanes follow the setting
	check(schema.Options{Wakeup: schema.WakeupNotify}, true, 3) // and back on, on every lane
	if err := (schema.Options{Wakeup: 7}).Validate(); err == nil {
		t.Fatal("Validate accepted an unknown wakeup")
	}
}

func TestNotifyBeforeMigrate(t *testing.T) {
	t.Parallel()
	if _, err := schema.Notify(context.Background(), pgtest.NewPool(t)); !errors.Is(err, schema.ErrNotMigrated) {
		t.Fatalf("Notify before Migrate: %v, want ErrNotMigrated", err)
	}
}

// TestMigrationRegistersExistingRelayGroups: migration 004 registers every
// relay group that has offsets ("<group>/<lane>"), so that a group that is
// down while the database is upgraded keeps its backlog.
func TestMigrationRegistersExistingRelayGroups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2}); err != nil {
		t.Fatal(err)
	}
	// As before migration 004: relays ran, nothing was registered.
	if _, err := pool.Exec(ctx, `DELETE FROM eventbus_migrations WHERE version = 4;
		DELETE FROM eventbus_relay_groups;
		INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id) VALUES
			('eventbus_relay/0', 3, '10'), ('eventbus_relay/1', 4, '11'), ('to-kafka/1', 0, '0'),
			('fan/out/0', 1, '9'), ('not-a-lane', 1, '1')`); err != nil {
		t.Fatal(err)
	}
	res, err := schema.Migrate(ctx, pool, schema.Options{})
	if err != nil || !slices.Equal(res.Applied, []int{4}) {
		t.Fatalf("migrate: %+v, %v; want migration 4 applied", res, err)
	}
	rows, err := pool.Query(ctx, `SELECT consumer_group FROM eventbus_relay_groups ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"eventbus_relay", "fan/out", "to-kafka"}; !slices.Equal(groups, want) {
		t.Errorf("registered groups %q, want %q", groups, want)
	}
}
