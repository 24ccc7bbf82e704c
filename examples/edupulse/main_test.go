package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestScenario runs the example end to end on a test database and the
// default in-process broker, and expects its consistency check to pass.
func TestScenario(t *testing.T) {
	cfg, err := parseFlags([]string{"-students", "20", "-answers", "6", "-pulses", "5", "-lessons", "3", "-progress=false"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	cfg.BrokerURL = "gochannel://"
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "consistency check: OK") {
		t.Errorf("consistency check did not pass:\n%s", out)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			rows[f[0]] = f[1] + " " + f[2]
		}
	}
	for name, want := range map[string]string{
		"edupulse.pulse.answered":    "20 20",   // every 4th answer (20 students x 1) as version 1, consumed upcast
		"edupulse.pulse.answered@v2": "100 100", // the other 100 as version 2
		"edupulse.badge.awarded":     "40 40",   // a badge every 3 answers
		"edupulse.pulse.created":     "5 5",
		"edupulse.lesson.published":  "3 3",
	} {
		if rows[name] != want {
			t.Errorf("%s: committed/consumed %q, want %q\n%s", name, rows[name], want, out)
		}
	}
}

// TestMetricsEndpoint runs the example with -metrics-addr and scrapes it
// while it runs.
func TestMetricsEndpoint(t *testing.T) {
	cfg, err := parseFlags([]string{"-students", "10", "-answers", "3", "-progress=false", "-metrics-addr", "127.0.0.1:0"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	var mu sync.Mutex
	var last string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	cfg.onMetrics = func(url string) {
		wg.Go(func() {
			for {
				if resp, err := http.Get(url); err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						mu.Lock()
						last = string(body)
						mu.Unlock()
					}
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), cfg, &stdout, &stderr)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{
		"eventbus_outbox_backlog{lane=\"0\"}",
		"eventbus_relay_published_total",
		"eventbus_consumer_handled_total{consumer_group=\"badges\"}",
		"eventbus_dead_letters 0",
		"eventbus_status_up 1",
	} {
		if !strings.Contains(last, want) {
			t.Errorf("scrape lacks %q:\n%s", want, last)
		}
	}
}

// noEnv is an empty environment.
func noEnv(string) string { return "" }
