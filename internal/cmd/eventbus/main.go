// Command eventbus operates an eventbus database: it applies the schema,
// shows the outbox backlog, dead letters and inbox, manages dead letters
// and relay groups, follows the outbox as events are written, and runs a
// relay process.
//
//	go run github.com/edupulse/eventbus/internal/cmd/eventbus status
//
// It knows no application's event types: tail and dlq show read an event's
// name, version and aggregate from its metadata and print its JSON payload
// as stored, so it serves any application's outbox.
//
// Run it without arguments for the list of commands. Output is a
// human-readable table by default and JSON with --json. The exit status is
// 0 on success, 1 on an error and 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usageText = `Usage: eventbus [global flags] <command> [flags] [arguments]

Operates an eventbus database: its outbox, relay, dead letters and inbox.

Commands:
  migrate [--lanes N] [--wakeup notify|poll]
                                apply the schema (safe to repeat)
  migrate --print-sql [--after VERSION] [--lanes N] [--wakeup notify|poll]
                                print the schema as plain SQL for another migration tool
  status [--relay-group G] [--consumer-group G]
                                outbox backlog per lane, dead letters, inbox
  dlq list [--all] [--limit N] [--kind relay|consumer] [--consumer-group G]
                                list dead letters of both kinds, oldest first
  dlq show ID                   show a dead letter with its payload
  dlq fix ID FILE               replace a dead letter's stored payload (FILE or - for stdin)
  dlq replay ID [--broker URL]  send a dead letter back: a relay's to its outbox lane,
                                a consumer's to its broker topic
  dlq discard ID                delete a dead letter for good
  dlq park LANE [--relay-group G]
                                move the event a lane is stuck on to the dead letters
  groups list                   relay groups: registered, last seen, backlog
  groups drop GROUP             retire a relay group (the cleaner stops keeping rows for it)
  tail [-n N] [--from-start] [--follow] [--pretty]
                                print outbox events: name, version, aggregate, JSON
  relay [--broker URL] [--relay-group G]
                                relay the outbox to a broker until interrupted

Dead letters are of two kinds. A relay dead letter is an outbox event the
relay could never publish. A consumer dead letter is a message a consumer
gave up on (its handlers kept failing, or it cannot decode it), stored by
consumers that have a Pool. Ids are unique across both kinds.

Two kinds of groups: a relay group is a set of relay processes that share
the outbox lanes (--relay-group, default eventbus_relay); a consumer group is
a set of consumers of broker topics with one inbox (--consumer-group). The
older --group still works where it did, meaning the same as before, with a
warning.

Global flags, accepted before or after the command:
  --database-url URL  PostgreSQL URL (default $DATABASE_URL)
  --json              machine-readable JSON output

Environment:
  DATABASE_URL        PostgreSQL URL when --database-url is not given
  EVENTBUS_BROKER     broker URL for relay and dlq replay when --broker is not given

Run 'eventbus <command> --help' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the eventbus command line args (without the program name) and
// returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return a.main(ctx, args)
}

// app is one invocation of the command.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// registry, when set, decodes events into their types before printing
	// them (upcasters applied, unknown names said so). The command itself
	// sets none: it works for any application's events, decoding them by
	// the name and version in their metadata and printing their JSON.
	registry *bus.Registry

	// Global flags.
	databaseURL string
	jsonOut     bool

	// Flags of the commands.
	lanes         int           // migrate
	wakeup        string        // migrate
	printSQL      bool          // migrate
	sqlAfter      int           // migrate --print-sql
	group         string        // the relay group: status, relay, dlq park; the consumer group: dlq list
	consumerGroup string        // status
	deprecated    []string      // deprecated flags given, warned about
	dlqAll        bool          // dlq list
	dlqLimit      int           // dlq list
	dlqKind       string        // dlq list
	tailN         int           // tail
	tailFromStart bool          // tail
	tailFollow    bool          // tail
	tailPretty    bool          // tail
	tailInterval  time.Duration // tail
	relayOpts     relayOptions  // relay; its brokerURL for dlq replay too
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// command is one subcommand.
type command struct {
	name  string
	args  string // synopsis of the positional arguments
	help  string
	flags func(fs *flag.FlagSet) // defines the command's own flags
	run   func(ctx context.Context, args []string) error
	nargs [2]int // minimum and maximum number of positional arguments
}

func (a *app) main(ctx context.Context, args []string) int {
	global := flag.NewFlagSet("eventbus", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	a.globalFlags(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, usageText)
			return exitOK
		}
		return a.fail(usagef("%v", err))
	}
	rest := global.Args()
	if len(rest) == 0 {
		fmt.Fprint(a.stderr, usageText)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	switch name {
	case "help":
		fmt.Fprint(a.stdout, usageText)
		return exitOK
	case "dlq":
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return a.fail(usagef("dlq: want a subcommand first: list, show, fix, replay, discard or park"))
		}
		name, rest = "dlq "+rest[0], rest[1:]
	case "groups":
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return a.fail(usagef("groups: want a subcommand first: list or drop"))
		}
		name, rest = "groups "+rest[0], rest[1:]
	}
	cmd, ok := a.commands()[name]
	if !ok {
		return a.fail(usagef("unknown command %q (run 'eventbus help')", name))
	}
	fs := flag.NewFlagSet("eventbus "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.globalFlags(fs)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		a.commandUsage(a.stdout, cmd, fs)
		return exitOK
	}
	if err != nil {
		return a.fail(usagef("%s: %v", cmd.name, err))
	}
	for _, w := range a.deprecated {
		fmt.Fprintf(a.stderr, "eventbus: %s: %s\n", cmd.name, w)
	}
	if len(pos) < cmd.nargs[0] || len(pos) > cmd.nargs[1] {
		a.commandUsage(a.stderr, cmd, fs)
		return a.fail(usagef("%s: want %s, got %d argument(s)", cmd.name, orDefault(cmd.args, "no arguments"), len(pos)))
	}
	if a.databaseURL == "" {
		a.databaseURL = a.getenv("DATABASE_URL")
	}
	return a.fail(cmd.run(ctx, pos))
}

func orDefault(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// deprecatedGroupFlag defines --group, the old name of the flag name, on
// fs: it sets the same variable and warns. A bare --group was read as a
// consumer group by users when it meant the relay group.
func (a *app) deprecatedGroupFlag(fs *flag.FlagSet, name string, p *string) {
	fs.Func("group", "deprecated: the old name of --"+name, func(s string) error {
		*p = s
		a.deprecated = append(a.deprecated, "--group is deprecated: it means --"+name+"; say --"+name)
		return nil
	})
}

// globalFlags defines the global flags on fs: they are accepted before and
// after the command. (Func flags have no default, so that a command's
// --help never prints the URL given before it.)
func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.Func("database-url", "PostgreSQL `URL` (default $DATABASE_URL)", func(s string) error {
		a.databaseURL = s
		return nil
	})
	fs.BoolFunc("json", "machine-readable JSON output", func(s string) error {
		v, err := strconv.ParseBool(s)
		a.jsonOut = v
		return err
	})
}

func (a *app) commandUsage(w io.Writer, cmd command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: eventbus %s [flags]%s\n\n%s\n\nFlags:\n", cmd.name, strings.TrimRight(" "+cmd.args, " "), cmd.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseInterspersed parses flags found anywhere among args and returns the
// positional arguments. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first positional argument, or after "--".
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// fail reports err on stderr and returns the exit status for it.
func (a *app) fail(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "eventbus: %s\n", err)
		return exitUsage
	}
	msg := err.Error()
	// Errors of the bus package start with "bus: "; the command's name is
	// enough of a prefix.
	msg = strings.TrimPrefix(msg, "bus: ")
	fmt.Fprintf(a.stderr, "eventbus: %s\n", msg)
	return exitError
}

func (a *app) commands() map[string]command {
	list := []command{
		{name: "migrate", help: "Applies the eventbus schema migrations and makes sure the outbox has the given\nnumber of lanes. Safe to run again: applied migrations are skipped.\n\nWith --print-sql it connects to nothing and prints the schema as one plain SQL\nscript instead (the migrations after --after, recorded as Migrate records them,\nthen the lane tables), for goose, golang-migrate or atlas. Run it in one\ntransaction. Needs PostgreSQL 14 or newer.",
			flags: a.migrateFlags, run: a.migrate},
		{name: "status", help: "Shows, per outbox lane, the events the relay has not acknowledged (backlog),\nthe age of the oldest of them, the rows stored and the last relayed event;\nthen the dead letters not replayed and the inbox rows per consumer group.",
			flags: a.statusFlags, run: a.status},
		{name: "dlq list", help: "Lists dead letters of both kinds, oldest first; KIND says which:\n  relay     an outbox event the relay could never publish (FROM: its lane)\n  consumer  a message a consumer gave up on, its handlers failing or the\n            message undecodable (FROM: the consumer group); stored by\n            consumers that have a Pool (bus.ConsumerConfig.DeadLetterStore)\nIds are unique across both kinds.",
			flags: a.dlqListFlags, run: a.dlqList},
		{name: "dlq show", args: "ID", help: "Shows a dead letter of either kind: its error, metadata and payload (decoded\nwhen it can be); for a consumer dead letter also its group and topic.",
			run: a.dlqShow, nargs: [2]int{1, 1}},
		{name: "dlq fix", args: "ID FILE", help: "Replaces a dead letter's stored payload with the contents of FILE (- reads\nstdin), as 'dlq show --json' prints it under \"payload\": for a relay dead letter\na Watermill forwarder envelope, for a consumer dead letter the event's JSON.\nReplay it afterwards.",
			run: a.dlqFix, nargs: [2]int{2, 2}},
		{name: "dlq replay", args: "ID", help: "Sends a dead letter back, under the same event id, and marks it replayed.\nA relay dead letter goes back to its outbox lane; a payload that is still\nmalformed is refused: fix it first. A consumer dead letter is published again\nto the broker topic it came from (--broker, default $" + broker.EnvBroker + "): every\nconsumer group of that topic receives it, and a group that had handled it\nskips it in its inbox (OnTx handlers). To hand it to its own group's handlers\nonly, call Consumer.ReplayDeadLetter in a process that runs that consumer.",
			flags: a.dlqReplayFlags, run: a.dlqReplay, nargs: [2]int{1, 1}},
		{name: "dlq discard", args: "ID", help: "Deletes a dead letter of either kind for good.",
			run: a.dlqDiscard, nargs: [2]int{1, 1}},
		{name: "dlq park", args: "LANE", help: "Moves aside the event a lane is stuck on: the next event of LANE the relay\ngroup has not acknowledged becomes a dead letter, and the group's relays go on\nwith the event after it. Waits for a batch the relay has in flight on the lane.\nOther relay groups still relay the event. Replay it later with 'dlq replay'.",
			flags: a.dlqParkFlags, run: a.dlqPark, nargs: [2]int{1, 1}},
		{name: "groups list", help: "Lists the relay groups registered in the database (a relay registers its group\nwhen it starts), with when each was registered and last seen and its backlog:\nthe outbox rows it has not acknowledged. The cleaner deletes a row only once\nevery registered group has acknowledged it.",
			run: a.groupsList},
		{name: "groups drop", args: "GROUP", help: "Retires a relay group: deletes its registration and its offsets, so that the\ncleaner no longer keeps outbox rows for it. Stop the group's relays first: a\nrunning relay registers its group again and relays the stored rows from the start.",
			run: a.groupsDrop, nargs: [2]int{1, 1}},
		{name: "tail", help: "Prints outbox events: the last N ones, or all with --from-start, then, with\n--follow, each event as its transaction commits, until interrupted. Each\nevent is read from the outbox row alone, whatever application wrote it: its\nname, version, aggregate and id from the metadata, its payload as the JSON\nstored (indented under the event with --pretty). A row that is not a\nwell-formed outbox envelope is printed raw, saying why.",
			flags: a.tailFlags, run: a.tail},
		{name: "relay", help: "Runs a relay process: publishes the outbox's events to the broker until\ninterrupted (SIGINT, SIGTERM), then finishes the events in flight. An\nin-process broker (gochannel://) is refused without --allow-in-process:\nnothing outside the process could receive the events it acknowledges.",
			flags: a.relayFlags, run: a.relay},
	}
	m := make(map[string]command, len(list))
	for _, c := range list {
		m[c.name] = c
	}
	return m
}
