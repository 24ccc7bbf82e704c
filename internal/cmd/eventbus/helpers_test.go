package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// quietLogger drops the logs of the relays the tests run.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a bytes.Buffer safe for a command running in the
// background.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is what one run of the command did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the command in-process.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// mustCLI runs the command and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) result {
	t.Helper()
	r := cli(t, args...)
	if r.code != 0 {
		t.Fatalf("eventbus %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// background runs the command until stop, which returns its result.
type background struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan int
	once           sync.Once
	res            result
}

func cliBackground(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bg := &background{cancel: cancel, done: make(chan int, 1)}
	go func() { bg.done <- run(ctx, args, &bg.stdout, &bg.stderr) }()
	t.Cleanup(func() { bg.stop(t) })
	return bg
}

func (bg *background) stop(t *testing.T) result {
	t.Helper()
	bg.once.Do(func() {
		bg.cancel()
		select {
		case code := <-bg.done:
			bg.res = result{code, bg.stdout.String(), bg.stderr.String()}
		case <-time.After(60 * time.Second):
			t.Errorf("background command did not stop within 60s")
		}
	})
	return bg.res
}

// exited reports whether the command stopped on its own, and its result.
func (bg *background) exited() (result, bool) {
	select {
	case code := <-bg.done:
		bg.done <- code
		return result{code, bg.stdout.String(), bg.stderr.String()}, true
	default:
		return result{}, false
	}
}

// newDB returns the URL of a fresh database and a pool on it.
func newDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return url, pool
}

// migrated returns a database migrated by the command, with lanes lanes.
func migrated(t *testing.T, lanes int) (string, *pgxpool.Pool, *bus.Outbox) {
	t.Helper()
	url, pool := newDB(t)
	mustCLI(t, "migrate", "--database-url", url, "--lanes", fmt.Sprint(lanes))
	ob, err := bus.NewOutbox(context.Background(), pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	return url, pool, ob
}

// publish commits each event in a transaction of its own.
func publish(t *testing.T, pool *pgxpool.Pool, ob *bus.Outbox, evs ...bus.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := ob.InTx(context.Background(), pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
			return []bus.Event{ev}, nil
		}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDrained waits until the relay acknowledged every event.
func waitDrained(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	waitFor(t, "the relay to drain the outbox", func() bool {
		st, err := observe.ReadStatus(context.Background(), pool, "")
		return err == nil && st.Backlog() == 0
	})
}

var (
	uuidRe      = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	tableTimeRe = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z`)
	tailTimeRe  = regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z`)
)

// normalize replaces the volatile fields of the command's output with
// stand-ins of the same width, so that tables stay aligned: UUIDs, in
// order of appearance, and times.
func normalize(s string) string {
	ids := map[string]string{}
	s = uuidRe.ReplaceAllStringFunc(s, func(id string) string {
		if n, ok := ids[id]; ok {
			return n
		}
		n := fmt.Sprintf("00000000-0000-4000-8000-%012d", len(ids)+1)
		ids[id] = n
		return n
	})
	s = tableTimeRe.ReplaceAllString(s, "2026-01-02 15:04:05Z")
	return tailTimeRe.ReplaceAllString(s, "2026-01-02T15:04:05.000Z")
}

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the tests with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (run with -update if the change is intended)\n--- want:\n%s--- got:\n%s", path, want, got)
	}
}
