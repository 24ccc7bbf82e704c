package pgtest_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestNewPoolIsolation gets two databases in parallel subtests and checks
// that they are different and that a table created in one is not visible in
// the other.
func TestNewPoolIsolation(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		names []string
	)
	t.Run("group", func(t *testing.T) {
		for _, sub := range []string{"first", "second"} {
			t.Run(sub, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				pool := pgtest.NewPool(t)

				var db string
				if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
					t.Fatalf("current_database: %v", err)
				}
				mu.Lock()
				names = append(names, db)
				mu.Unlock()

				// A fresh database has no user tables.
				var tables int
				if err := pool.QueryRow(ctx,
					"SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").Scan(&tables); err != nil {
					t.Fatalf("count tables: %v", err)
				}
				if tables != 0 {
					t.Errorf("new database %s has %d tables, want 0", db, tables)
				}
				// The same table name in both subtests: if they shared a
				// database, one CREATE TABLE would fail.
				if _, err := pool.Exec(ctx, "CREATE TABLE probe (owner text NOT NULL)"); err != nil {
					t.Fatalf("create table in %s: %v", db, err)
				}
				if _, err := pool.Exec(ctx, "INSERT INTO probe VALUES ($1)", sub); err != nil {
					t.Fatalf("insert: %v", err)
				}
				var n int
				if err := pool.QueryRow(ctx, "SELECT count(*) FROM probe").Scan(&n); err != nil {
					t.Fatalf("count: %v", err)
				}
				if n != 1 {
					t.Errorf("probe in %s has %d rows, want 1", db, n)
				}
			})
		}
	})
	if t.Failed() || t.Skipped() {
		return
	}
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases = %v, want two different ones", names)
	}
	for _, name := range names {
		if !strings.HasPrefix(name, "t_testnewpoolisolation_group_") || len(name) > 63 {
			t.Errorf("database name %q does not follow the test name", name)
		}
	}
	t.Logf("databases: %v", names)
}

// TestManyParallel creates many databases concurrently.
func TestManyParallel(t *testing.T) {
	t.Parallel()
	for i := range 16 {
		t.Run("db", func(t *testing.T) {
			t.Parallel()
			pool := pgtest.NewPool(t)
			var one int
			if err := pool.QueryRow(context.Background(), "SELECT $1::int", i).Scan(&one); err != nil {
				t.Fatalf("select: %v", err)
			}
			if one != i {
				t.Errorf("got %d, want %d", one, i)
			}
		})
	}
}

// TestNewDatabaseLongName checks that a very long test name still gives a
// valid, distinct database name.
func TestNewDatabaseLongName(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("Very Long/Sub-Test Name ", 10)
	var urls []string
	for range 2 {
		t.Run(long, func(t *testing.T) {
			urls = append(urls, pgtest.NewDatabase(t))
		})
	}
	if len(urls) == 2 && urls[0] == urls[1] {
		t.Errorf("two databases with the same URL %s", urls[0])
	}
}
