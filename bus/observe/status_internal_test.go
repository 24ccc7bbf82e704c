package observe

import (
	"context"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// TestReadStatusTurnsParallelQueryAndJITOff: ReadStatus's queries run with
// parallel workers and JIT compilation off (on a busy machine, starting
// workers or compiling the plan cost more than counting the backlog), and
// the settings end with its transaction, also inside a caller's one.
func TestReadStatusTurnsParallelQueryAndJITOff(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 2}); err != nil {
		t.Fatal(err)
	}
	settings := func(q DB) string {
		t.Helper()
		var s string
		if err := q.QueryRow(ctx, `SELECT current_setting('jit') || ' ' || current_setting('max_parallel_workers_per_gather')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL jit = on; SET LOCAL max_parallel_workers_per_gather = 2"); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]DB{"pool": pool, "caller's transaction": tx} {
		var during string
		if _, err := readStatusTx(ctx, conn, "", func(q DB) error { during = settings(q); return nil }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if during != "off 0" {
			t.Errorf("%s: jit and max_parallel_workers_per_gather during ReadStatus: %q, want \"off 0\"", name, during)
		}
	}
	if after := settings(tx); after != "on 2" {
		t.Errorf("the caller's transaction after ReadStatus: %q, want its own \"on 2\"", after)
	}
}
