package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgserver"
	"github.com/edupulse/eventbus/schema"
)

// The printed schema, applied by psql to an empty database as a migration
// tool would, is one the relay runs on.
func TestMigratePrintSQLAppliedByPsqlRunsTheRelay(t *testing.T) {
	t.Parallel()
	url, pool := newDB(t)
	script := mustCLI(t, "migrate", "--print-sql", "--lanes", "3").stdout
	want, err := schema.SQL(schema.SQLOptions{Lanes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if script != want {
		t.Fatal("migrate --print-sql does not print schema.SQL")
	}
	bin, err := pgserver.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	psql := exec.Command(filepath.Join(bin, "psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-d", url)
	psql.Stdin = strings.NewReader(script)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if r := mustCLI(t, "migrate", "--database-url", url); r.stdout != "Schema up to date; 3 lanes.\n" {
		t.Fatalf("migrate after the script: %s", r)
	}

	ob, err := bus.NewOutbox(context.Background(), pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		publish(t, pool, ob, gen.NewPulseCreated(uuid.New(), uuid.New(), "printed", time.Now()))
	}
	relay := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := relay.stop(t); r.code != exitOK {
		t.Fatalf("relay: %s", r)
	}
}

func TestMigratePrintSQLFlags(t *testing.T) {
	t.Parallel()
	r := mustCLI(t, "migrate", "--print-sql", "--after", "5", "--wakeup", "poll")
	if strings.Contains(r.stdout, "Migration 005_") || !strings.Contains(r.stdout, "Migration 006_") ||
		!strings.Contains(r.stdout, "eventbus_ensure_lanes(4, false)") {
		t.Errorf("--after 5 --wakeup poll printed:\n%s", r.stdout)
	}
	if r := cli(t, "migrate", "--after", "5", "--database-url", "postgres://x"); r.code != exitUsage || !strings.Contains(r.stderr, "--print-sql") {
		t.Errorf("--after without --print-sql: %s", r)
	}
}
