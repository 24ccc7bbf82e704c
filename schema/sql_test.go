package schema_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// catalog describes a database's eventbus schema: tables and their
// persistence, columns, indexes, constraints, triggers, functions, the
// settings and the recorded migrations.
func catalog(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	err := pool.QueryRow(context.Background(), `
		SELECT string_agg(x, E'\n' ORDER BY x) FROM (
		    SELECT 'rel ' || relname || ' ' || relkind::text || ' ' || relpersistence::text FROM pg_class
		    WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S', 'v')
		    UNION ALL
		    SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
		    FROM information_schema.columns WHERE table_schema = 'public'
		    UNION ALL
		    SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
		    UNION ALL
		    SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
		    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
		    UNION ALL
		    SELECT 'trg ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
		    UNION ALL
		    SELECT 'fn ' || pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
		    UNION ALL
		    SELECT 'set ' || lanes || ' ' || notify FROM eventbus_settings
		    UNION ALL
		    SELECT 'mig ' || version || ' ' || name FROM eventbus_migrations
		) c(x)`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// applySQL runs a script the way psql or a migration tool does: as plain
// SQL text, in one transaction.
func applySQL(t *testing.T, pool *pgxpool.Pool, script string) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, script); err != nil {
		t.Fatalf("apply the printed schema: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSQLGivesTheSchemaMigrateGives(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, opts := range []schema.SQLOptions{{}, {Lanes: 7, Wakeup: schema.WakeupPoll}} {
		script, err := schema.SQL(opts)
		if err != nil {
			t.Fatal(err)
		}
		byScript, byMigrate := pgtest.NewPool(t), pgtest.NewPool(t)
		applySQL(t, byScript, script)
		if _, err := schema.Migrate(ctx, byMigrate, schema.Options{Lanes: opts.Lanes, Wakeup: opts.Wakeup}); err != nil {
			t.Fatal(err)
		}
		if got, want := catalog(t, byScript), catalog(t, byMigrate); got != want {
			t.Fatalf("%+v: the printed schema differs from Migrate's:\n%s", opts, diffLines(got, want))
		}
		// Migrate takes over from the script: nothing left to apply.
		res, err := schema.Migrate(ctx, byScript, schema.Options{})
		if err != nil || len(res.Applied) != 0 {
			t.Fatalf("Migrate after the script: %+v, %v; want nothing applied", res, err)
		}
	}
}

// A database migrated by an older release takes the script of the
// migrations after it, and ends with the schema of this release.
func TestSQLAfterUpgradesAnOlderSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	old := ms[len(ms)/2].Version
	upgraded, fresh := pgtest.NewPool(t), pgtest.NewPool(t)
	if _, err := schema.MigrateTo(ctx, upgraded, schema.Options{}, old); err != nil {
		t.Fatal(err)
	}
	script, err := schema.SQL(schema.SQLOptions{After: old})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(script, "Migration 001_") {
		t.Fatalf("the script after %03d still holds migration 001", old)
	}
	applySQL(t, upgraded, script)
	if _, err := schema.Migrate(ctx, fresh, schema.Options{}); err != nil {
		t.Fatal(err)
	}
	if got, want := catalog(t, upgraded), catalog(t, fresh); got != want {
		t.Fatalf("upgraded by script differs from migrated:\n%s", diffLines(got, want))
	}
}

func TestSQLRefusesInvalidOptions(t *testing.T) {
	for _, opts := range []schema.SQLOptions{{Lanes: -1}, {Lanes: schema.LanesMax + 1}, {Wakeup: 9}, {After: -1}} {
		if _, err := schema.SQL(opts); err == nil {
			t.Errorf("SQL(%+v) = nil error", opts)
		}
	}
}

func TestMigrateRefusesAServerOlderThanFourteen(t *testing.T) {
	err := schema.CheckServerVersion(context.Background(), fakeServer{num: 130012, version: "13.12"})
	if !errors.Is(err, schema.ErrServerTooOld) || !strings.Contains(err.Error(), "13.12") {
		t.Fatalf("err = %v, want ErrServerTooOld naming 13.12", err)
	}
	if err := schema.CheckServerVersion(context.Background(), fakeServer{num: 140000, version: "14.0"}); err != nil {
		t.Fatalf("14.0: %v", err)
	}
	// The script checks too, on the server.
	script, err := schema.SQL(schema.SQLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(script, "server_version_num')::int < 140000") {
		t.Fatal("the printed schema does not check the server version")
	}
}

// diffLines lists the lines only one side has.
func diffLines(got, want string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var b strings.Builder
	for l := range g {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	for l := range w {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	return b.String()
}
