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
// consistency.
//
// The check covers this run only: the pulses, lessons and students it
// created and the events of them, so the example can run again and again
// against the same database.
//
// With no setup it starts a throwaway PostgreSQL from the local binaries
// (unless -database-url or DATABASE_URL names a server) and uses an
// in-process broker (unless -broker or EVENTBUS_BROKER names another):
//
//	go run ./examples/edupulse
//	go run ./examples/edupulse -broker nats://127.0.0.1:4222 -students 500
//
// An interrupt (Ctrl-C, SIGTERM) stops the producers; the events committed
// so far drain for at most -interrupt-drain (15 s by default) and are then
// checked like a complete run's. A second interrupt ends the process at
// once. Exit status:
//
//	0    the consistency check passed (after an interrupt too: every event
//	     committed before it was consumed)
//	1    the check failed, the events did not drain within -drain-timeout,
//	     or an error
//	2    bad flags
//	130  interrupted, and the events committed did not drain within
//	     -interrupt-drain: nothing was checked, nothing is claimed to fail
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// Environment variables the flags default to.
const (
	envDatabaseURL = "DATABASE_URL"
	envBroker      = broker.EnvBroker
)

// Defaults of the flags that bound waiting.
const (
	drainTimeoutDefault   = 2 * time.Minute
	interruptDrainDefault = 15 * time.Second
)

// brokerDefault is the broker when neither -broker nor EVENTBUS_BROKER
// names one.
const brokerDefault = "gochannel://"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C now ends the process at once
	}()
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(exitOK)
		}
		os.Exit(exitUsage)
	}
	os.Exit(exitCode(run(ctx, cfg, os.Stdout, os.Stderr), ctx, os.Stderr))
}

// errInterrupted is returned by run when an interrupt stopped it before the
// events committed drained: nothing was checked.
var errInterrupted = errors.New("interrupted")

// exitCode reports err and returns the exit status for it.
func exitCode(err error, ctx context.Context, stderr io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errInterrupted), ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "edupulse: interrupted:", strings.TrimPrefix(err.Error(), errInterrupted.Error()+": "))
		return exitInterrupted
	default:
		fmt.Fprintln(stderr, "edupulse:", err)
		return exitFailed
	}
}

// config is the example's flags.
type config struct {
	DatabaseURL    string
	BrokerURL      string
	Lanes          int
	Instructors    int
	Pulses         int
	Lessons        int
	Students       int
	Answers        int // per student
	V1Every        int // every Nth answer of a student published as PulseAnswered version 1
	BadgeEvery     int
	Workers        int
	Duration       time.Duration
	DrainTimeout   time.Duration
	InterruptDrain time.Duration
	MetricsAddr    string
	Progress       bool
	Verbose        bool

	// onMetrics, if set, is called with the /metrics URL once it serves.
	onMetrics func(url string)
	// onDrain, if set, is called when the run starts waiting for the
	// events to drain (tests interrupt the run there).
	onDrain func()
	// onConsume, if set, is called by the notifications consumer before it
	// handles an event (tests hold the drain back with it).
	onConsume func(ctx context.Context) error
	// lostCommit, if set, is asked about each event committed: true hides
	// the commit from the run's counters, as when an interrupt cuts off
	// COMMIT's reply and the producer never learns that it succeeded.
	lostCommit func(ev bus.Event) bool
}

const usageHeader = `Usage: edupulse [flags]

Runs the EduPulse scenario on eventbus end to end (producers, outbox, relay,
broker, two consumers), prints a summary and checks the database for
consistency: this run's events only, so it can run again on one database.

Environment:
  DATABASE_URL     PostgreSQL URL when -database-url is not given; when both
                   are empty, a throwaway server is started from the local
                   PostgreSQL binaries (initdb, postgres)
  EVENTBUS_BROKER  broker URL when -broker is not given (default gochannel://,
                   in process)

An interrupt stops the producers and lets what committed drain for at most
-interrupt-drain, then checks it; a second one ends the process at once.

Exit status: 0 the check passed; 1 it failed, the events did not drain within
-drain-timeout, or an error; 2 bad flags; 130 interrupted before what
committed drained (nothing checked).

Flags:
`

// parseFlags parses the command line; getenv supplies DATABASE_URL and
// EVENTBUS_BROKER for the flags not given.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("edupulse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL `URL` (default $"+envDatabaseURL+"; when both are empty, a throwaway server from the local binaries)")
	fs.StringVar(&c.BrokerURL, "broker", "", "broker `URL` (default $"+envBroker+", else "+brokerDefault+"); schemes: "+strings.Join(broker.Schemes(), ", "))
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
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", drainTimeoutDefault, "after producing, how long to wait for every event to be consumed; past it the run fails (exit 1) without checking")
	fs.DurationVar(&c.InterruptDrain, "interrupt-drain", interruptDrainDefault, "after an interrupt, how long to let the events committed drain before stopping unchecked (exit 130)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address (e.g. 127.0.0.1:9464)")
	fs.BoolVar(&c.Progress, "progress", true, "print a live progress line")
	fs.BoolVar(&c.Verbose, "v", false, "log every notification")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edupulse: unexpected argument %q (flags only; see -h)\n", fs.Arg(0))
		return c, errors.New("bad flags")
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = getenv(envDatabaseURL)
	}
	if c.BrokerURL == "" {
		c.BrokerURL = cmpOr(getenv(envBroker), brokerDefault)
	}
	if err := c.validate(); err != nil {
		fmt.Fprintln(stderr, "edupulse:", err)
		return c, err
	}
	return c, nil
}

// validate checks the flags, the broker URL's scheme included, before
// anything starts.
func (c config) validate() error {
	if c.Instructors < 1 || c.Pulses < 1 || c.Students < 0 || c.Answers < 0 || c.BadgeEvery < 1 || c.Workers < 1 || c.Lanes < 1 {
		return errors.New("-instructors, -pulses, -badge-every, -workers and -lanes must be at least 1")
	}
	if c.DrainTimeout <= 0 || c.InterruptDrain < 0 {
		return errors.New("-drain-timeout must be positive and -interrupt-drain not negative")
	}
	return validateBrokerURL(c.BrokerURL)
}

// validateBrokerURL checks that a broker adapter takes the URL's scheme, so
// that a mistake fails before PostgreSQL starts.
func validateBrokerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("-broker %s: not a broker URL (such as gochannel:// or nats://127.0.0.1:4222)", broker.Redact(raw))
	}
	if !slices.Contains(broker.Schemes(), u.Scheme) {
		return fmt.Errorf("-broker %s: %w %q; available: %s", broker.Redact(raw), broker.ErrUnknownScheme, u.Scheme, strings.Join(broker.Schemes(), ", "))
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}
