package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// smallRun is a small scenario on a test database and the in-process
// broker.
func smallRun(t *testing.T, args ...string) config {
	t.Helper()
	cfg, err := parseFlags(append([]string{"-students", "8", "-answers", "4", "-pulses", "3", "-lessons", "2", "-progress=false"}, args...), noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	return cfg
}

// runResult is what one run printed and returned.
type runResult struct {
	err            error
	code           int
	stdout, stderr string
}

func runOnce(t *testing.T, ctx context.Context, cfg config) runResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(ctx, cfg, &stdout, &stderr)
	code := exitCode(err, ctx, &stderr)
	return runResult{err, code, stdout.String(), stderr.String()}
}

// TestRunTwiceOnOneDatabase: the check covers the run's own events, so a
// second run on the database of a first passes, and so does a third after
// an interrupted one left events behind.
func TestRunTwiceOnOneDatabase(t *testing.T) {
	cfg := smallRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i := range 2 {
		r := runOnce(t, ctx, cfg)
		if r.err != nil || !strings.Contains(r.stdout, "consistency check: OK") {
			t.Fatalf("run %d: %v\nstdout:\n%s\nstderr:\n%s", i+1, r.err, r.stdout, r.stderr)
		}
		rows := map[string]string{}
		for _, line := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(line); len(f) == 3 {
				rows[f[0]] = f[1] + " " + f[2]
			}
		}
		// 8 students answer 4 times: a badge each.
		if rows["edupulse.pulse.created"] != "3 3" || rows["edupulse.pulse.answered@v2"] != "24 24" || rows["edupulse.badge.awarded"] != "8 8" {
			t.Errorf("run %d counts other runs' events:\n%s", i+1, r.stdout)
		}
	}
}

// TestInterruptWhileDraining: an interrupt as the run waits for its events
// to drain lets them drain, then checks them: never a failure made of
// events still on their way.
func TestInterruptWhileDraining(t *testing.T) {
	cfg := smallRun(t, "-interrupt-drain", "1m")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.onDrain = cancel // the interrupt, as the last producer is done
	r := runOnce(t, ctx, cfg)
	if r.err != nil || r.code != exitOK || !strings.Contains(r.stdout, "consistency check: OK") ||
		!strings.Contains(r.stdout, "Interrupted: the producers stopped early") || !strings.Contains(r.stderr, "stopped cleanly after the interrupt") {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s", r.code, r.err, r.stdout, r.stderr)
	}
}

// TestInterruptThatCannotDrain: when what committed cannot drain within
// -interrupt-drain, the run says so and exits 130, claiming neither a
// passed nor a failed check.
func TestInterruptThatCannotDrain(t *testing.T) {
	cfg := smallRun(t, "-interrupt-drain", "200ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.onDrain = cancel
	// The notifications consumer handles nothing until it stops.
	cfg.onConsume = func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	r := runOnce(t, ctx, cfg)
	if !errors.Is(r.err, errInterrupted) || r.code != exitInterrupted || strings.Contains(r.stdout, "consistency check") ||
		!strings.Contains(r.stderr, "did not drain within -interrupt-drain 200ms") || !strings.Contains(r.stderr, "consistency not checked") {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s", r.code, r.err, r.stdout, r.stderr)
	}
}

// TestSlowDrain: a drain past -drain-timeout is reported as such, with how
// far it got, not as a list of consistency problems.
func TestSlowDrain(t *testing.T) {
	cfg := smallRun(t, "-drain-timeout", "1s")
	cfg.onConsume = func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	r := runOnce(t, context.Background(), cfg)
	if r.code != exitFailed || strings.Contains(r.stdout, "consistency check") ||
		!strings.Contains(r.stderr, "the events did not drain within -drain-timeout 1s (backlog") || !strings.Contains(r.stderr, "consistency not checked") {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s", r.code, r.err, r.stdout, r.stderr)
	}
}

// TestFlags: -h names the environment; a bad broker URL fails before
// anything starts.
func TestFlags(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, noEnv, &help); err == nil {
		t.Fatal("-h: no ErrHelp")
	}
	for _, want := range []string{"DATABASE_URL", "EVENTBUS_BROKER", "-interrupt-drain", "-drain-timeout", "Exit status", "130"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-h does not mention %s:\n%s", want, help.String())
		}
	}
	env := map[string]string{"DATABASE_URL": "postgres://from-env/db", "EVENTBUS_BROKER": "nats://127.0.0.1:4222"}
	cfg, err := parseFlags(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil || cfg.DatabaseURL != env["DATABASE_URL"] || cfg.BrokerURL != env["EVENTBUS_BROKER"] {
		t.Errorf("from the environment: %+v, %v", cfg, err)
	}
	if cfg, err := parseFlags(nil, noEnv, &bytes.Buffer{}); err != nil || cfg.BrokerURL != "gochannel://" || cfg.DatabaseURL != "" {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	for _, b := range []string{"bogus://", "not a url", "127.0.0.1:4222"} {
		var stderr bytes.Buffer
		if _, err := parseFlags([]string{"-broker", b}, noEnv, &stderr); err == nil || !strings.Contains(stderr.String(), "-broker") {
			t.Errorf("-broker %s: %v, %s", b, err, stderr.String())
		}
	}
}

// TestBadBrokerFailsBeforePostgreSQL: run refuses a broker URL no adapter
// takes before it starts (or connects to) PostgreSQL.
func TestBadBrokerFailsBeforePostgreSQL(t *testing.T) {
	cfg, err := parseFlags(nil, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.BrokerURL = "bogus://somewhere"
	start := time.Now()
	r := runOnce(t, context.Background(), cfg)
	if r.code != exitFailed || !strings.Contains(r.stderr, `unknown broker scheme "bogus"`) || strings.Contains(r.stderr, "PostgreSQL") {
		t.Fatalf("exit %d after %s\nstderr:\n%s", r.code, time.Since(start), r.stderr)
	}
}

// TestDatabaseRefused: a server that refuses the connection is reported
// once, as such, not as a failed migration.
func TestDatabaseRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := parseFlags(nil, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = "postgres://alice:s3cret@" + addr + "/db"
	r := runOnce(t, context.Background(), cfg)
	if r.code != exitFailed || !strings.Contains(r.stderr, "edupulse: database unreachable at postgres://alice:xxxxx@"+addr+"/db: ") ||
		strings.Count(r.stderr, "connection refused") != 1 || strings.Contains(r.stderr, "migration") || strings.Contains(r.stderr, "s3cret") {
		t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	cfg.DatabaseURL = "mysql://alice@localhost:3306/db"
	r = runOnce(t, context.Background(), cfg)
	if r.code != exitFailed || !strings.Contains(r.stderr, "malformed database URL mysql://alice@localhost:3306/db: ") {
		t.Fatalf("a mysql URL: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
}

// TestCommitTheProducerNeverLearnt: an interrupt can cut off COMMIT's reply,
// so that a producer never learns that its transaction committed. The run
// waits for what the database holds, not for what the producers counted:
// such an event drains and is checked like the others.
func TestCommitTheProducerNeverLearnt(t *testing.T) {
	cfg := smallRun(t)
	var lost atomic.Int32
	cfg.lostCommit = func(ev bus.Event) bool {
		_, answered := ev.(gen.PulseAnsweredV2)
		return answered && lost.CompareAndSwap(0, 1)
	}
	r := runOnce(t, context.Background(), cfg)
	if r.err != nil || lost.Load() != 1 || !strings.Contains(r.stdout, "consistency check: OK") {
		t.Fatalf("%v (lost %d)\nstdout:\n%s\nstderr:\n%s", r.err, lost.Load(), r.stdout, r.stderr)
	}
}
