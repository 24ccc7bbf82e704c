package schema_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// TestMigrateConvertsCreatedAtToTimestamptz upgrades a database made by
// migrations 001 and 002, with outbox rows, whose server time zone (here the
// database's default) is America/New_York: created_at becomes TIMESTAMPTZ on
// the parent and every lane table, the rows are kept, and their times,
// written as local times of that zone, become the same instants. Lanes
// added afterwards have the new type too.
func TestMigrateConvertsCreatedAtToTimestamptz(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := pgtest.NewPool(t)
	if _, err := admin.Exec(ctx, `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'America/New_York'); END $$`); err != nil {
		t.Fatal(err)
	}
	// New sessions start in the database's zone.
	pool, err := pgxpool.NewWithConfig(ctx, admin.Config().Copy())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var zone string
	if err := pool.QueryRow(ctx, "SHOW TimeZone").Scan(&zone); err != nil || zone != "America/New_York" {
		t.Fatalf("session zone %q, %v", zone, err)
	}

	if _, err := schema.MigrateTo(ctx, pool, schema.Options{Lanes: 2}, 2); err != nil {
		t.Fatalf("migrate to 002: %v", err)
	}
	if got := createdAtTypes(t, pool); len(got) != 3 || got["eventbus_outbox"] != "timestamp without time zone" {
		t.Fatalf("before the upgrade: created_at types %v; want timestamp without time zone on 3 tables", got)
	}
	// Rows as producers wrote them before: the default CURRENT_TIMESTAMP
	// stored as a local time, and two times set by hand (winter and summer).
	var insertedAt time.Time
	if err := pool.QueryRow(ctx, `WITH ins AS (
		INSERT INTO watermill_eventbus_lane_0 (uuid, payload, transaction_id) VALUES ('now', '{}', pg_current_xact_id()))
		SELECT now()`).Scan(&insertedAt); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_1 (uuid, created_at, payload, transaction_id) VALUES
		('winter', '2026-01-15 08:00:00', '{}', pg_current_xact_id()),
		('summer', '2025-07-01 12:00:00', '{}', pg_current_xact_id())`); err != nil {
		t.Fatal(err)
	}

	res, err := schema.Migrate(ctx, pool, schema.Options{})
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if len(res.Applied) == 0 || res.Applied[0] != 3 || res.Lanes != 2 {
		t.Fatalf("upgrade = %+v; want 003 applied first and 2 lanes", res)
	}
	checkCreatedAt(t, pool, "eventbus_outbox", "watermill_eventbus_lane_0", "watermill_eventbus_lane_1")

	want := map[string]time.Time{
		"now":    insertedAt,
		"winter": time.Date(2026, 1, 15, 13, 0, 0, 0, time.UTC), // EST, UTC-5
		"summer": time.Date(2025, 7, 1, 16, 0, 0, 0, time.UTC),  // EDT, UTC-4
	}
	rows, err := pool.Query(ctx, `SELECT uuid, created_at FROM eventbus_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Time{}
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			t.Fatal(err)
		}
		got[id] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("rows after the upgrade: %v; want %v", got, want)
	}
	for id, w := range want {
		if !got[id].Equal(w) {
			t.Errorf("row %s: created_at %s, want %s", id, got[id].UTC(), w.UTC())
		}
	}

	// A lane added later (with the outbox drained, as Migrate requires)
	// inherits the type and default.
	if _, err := pool.Exec(ctx, `DELETE FROM eventbus_outbox`); err != nil {
		t.Fatal(err)
	}
	if res, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 3}); err != nil || res.Lanes != 3 {
		t.Fatalf("grow to 3 lanes: %+v, %v", res, err)
	}
	checkCreatedAt(t, pool, "eventbus_outbox", "watermill_eventbus_lane_0", "watermill_eventbus_lane_1", "watermill_eventbus_lane_2")

	// New rows, in the new lane too, from a session in another zone, hold
	// the instant of their transaction, and the cleaner's index is there.
	tokyo := admin.Config().Copy()
	tokyo.ConnConfig.RuntimeParams["timezone"] = "Asia/Tokyo"
	tp, err := pgxpool.NewWithConfig(ctx, tokyo)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, table := range []string{"watermill_eventbus_lane_0", "watermill_eventbus_lane_2"} {
		var same bool
		if err := tp.QueryRow(ctx, `WITH ins AS (INSERT INTO `+table+` (uuid, payload, transaction_id)
			VALUES ('tokyo', '{}', pg_current_xact_id()) RETURNING created_at)
			SELECT created_at = now() FROM ins`).Scan(&same); err != nil || !same {
			t.Errorf("insert into %s from Asia/Tokyo: created_at = now() is %v, %v", table, same, err)
		}
		var indexed bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexname = $1 || '_created')`, table).Scan(&indexed); err != nil || !indexed {
			t.Errorf("%s: created_at index %v, %v", table, indexed, err)
		}
	}
}

// checkCreatedAt checks that created_at is a TIMESTAMPTZ defaulting to
// now() in each table, and that no other outbox table exists.
func checkCreatedAt(t *testing.T, pool *pgxpool.Pool, tables ...string) {
	t.Helper()
	types, defaults := createdAtTypes(t, pool), createdAtDefaults(t, pool)
	if len(types) != len(tables) {
		t.Errorf("outbox tables %v, want %v", types, tables)
	}
	for _, table := range tables {
		if types[table] != "timestamp with time zone" || defaults[table] != "now()" {
			t.Errorf("%s.created_at: type %q, default %q; want timestamp with time zone, now()", table, types[table], defaults[table])
		}
	}
}

// createdAtTypes returns the type of created_at in the outbox tables.
func createdAtTypes(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	return outboxColumn(t, pool, `format_type(a.atttypid, a.atttypmod)`)
}

// createdAtDefaults returns the default of created_at in the outbox tables.
func createdAtDefaults(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	return outboxColumn(t, pool, `coalesce(pg_get_expr(d.adbin, d.adrelid), '')`)
}

func outboxColumn(t *testing.T, pool *pgxpool.Pool, expr string) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT c.relname::text, `+expr+`
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attname = 'created_at' AND c.relkind = 'r'
		  AND (c.relname = 'eventbus_outbox' OR c.relname LIKE 'watermill_eventbus_lane_%')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var table, v string
		if err := rows.Scan(&table, &v); err != nil {
			t.Fatal(err)
		}
		out[table] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
