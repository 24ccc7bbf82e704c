package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestScenario runs the example end to end on a test database and the
// default in-process broker, and expects its consistency check to pass.
func TestScenario(t *testing.T) {
	cfg, err := parseFlags([]string{"-students", "20", "-answers", "6", "-pulses", "5", "-lessons", "3", "-progress=false"}, &bytes.Buffer{})
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
		"edupulse.pulse.answered":   "120 120", // 20 students x 6 answers, committed and consumed
		"edupulse.badge.awarded":    "40 40",   // a badge every 3 answers
		"edupulse.pulse.created":    "5 5",
		"edupulse.lesson.published": "3 3",
	} {
		if rows[name] != want {
			t.Errorf("%s: committed/consumed %q, want %q\n%s", name, rows[name], want, out)
		}
	}
}
