// Command edupulse runs the EduPulse scenario on eventbus, end to end:
// instructors publish pulses and lessons, students answer; each write and
// its event commit in one transaction; the relay moves the events from the
// outbox to the broker; a badges consumer (inbox, exactly-once effect)
// awards a badge every few answers and publishes BadgeAwarded through the
// outbox; a notifications consumer (the generated exhaustive handler)
// receives everything. Answers are published as PulseAnswered version 2,
// graded, except every fourth, published as version 1 by an old producer:
// both consumers take version 2 only, and receive version 1 converted by
// its upcaster. At the end it prints a summary and checks the database for
// consistency; the exit status is 1 if the check fails.
//
// With no setup it starts a throwaway PostgreSQL from the local binaries
// (unless DATABASE_URL is set) and uses an in-process broker (unless
// -broker or EVENTBUS_BROKER names another):
//
//	go run ./examples/edupulse
//	go run ./examples/edupulse -broker nats://127.0.0.1:4222 -students 500
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C now ends the process at once
	}()
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "edupulse:", err)
		os.Exit(1)
	}
}

// config is the example's flags.
type config struct {
	DatabaseURL  string
	BrokerURL    string
	Lanes        int
	Instructors  int
	Pulses       int
	Lessons      int
	Students     int
	Answers      int // per student
	V1Every      int // every Nth answer of a student published as PulseAnswered version 1
	BadgeEvery   int
	Workers      int
	Duration     time.Duration
	DrainTimeout time.Duration
	MetricsAddr  string
	Progress     bool
	Verbose      bool

	// onMetrics, if set, is called with the /metrics URL once it serves.
	onMetrics func(url string)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("edupulse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL; empty starts a throwaway server from the local binaries")
	fs.StringVar(&c.BrokerURL, "broker", envOr("EVENTBUS_BROKER", "gochannel://"), "broker URL: gochannel://, nats://, amqp://, kafka://, redis://, postgres://")
	fs.IntVar(&c.Lanes, "lanes", 4, "outbox lanes")
	fs.IntVar(&c.Instructors, "instructors", 5, "instructors")
	fs.IntVar(&c.Pulses, "pulses", 20, "pulses published")
	fs.IntVar(&c.Lessons, "lessons", 10, "lessons published")
	fs.IntVar(&c.Students, "students", 50, "students")
	fs.IntVar(&c.Answers, "answers", 10, "answers per student")
	fs.IntVar(&c.V1Every, "v1-every", 4, "publish every Nth answer of a student as PulseAnswered version 1, as a producer not yet upgraded would (0: none)")
	fs.IntVar(&c.BadgeEvery, "badge-every", 3, "a badge every N answers")
	fs.IntVar(&c.Workers, "workers", 4, "concurrent producers")
	fs.DurationVar(&c.Duration, "duration", 0, "keep students answering for this long (0: answer -answers times each)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 2*time.Minute, "how long to wait for every event to be consumed")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:9464)")
	fs.BoolVar(&c.Progress, "progress", true, "print a live progress line")
	fs.BoolVar(&c.Verbose, "v", false, "log every notification")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.Instructors < 1 || c.Pulses < 1 || c.Students < 0 || c.Answers < 0 || c.BadgeEvery < 1 || c.Workers < 1 || c.Lanes < 1 {
		fmt.Fprintln(stderr, "edupulse: -instructors, -pulses, -badge-every, -workers and -lanes must be at least 1")
		return c, errors.New("bad flags")
	}
	return c, nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}
