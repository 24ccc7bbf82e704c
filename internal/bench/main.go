// Command bench measures the eventbus outbox and relay against baselines:
// producer cost (bus.Outbox.Publish vs a raw INSERT of the same row), relay
// throughput (bus.Relay with 1, 2, 4 and 8 lanes vs stock Watermill: the
// watermill-sql v3 subscriber and components/forwarder), commit-to-consumer
// latency (LISTEN/NOTIFY vs polling), the peak RSS of a relay draining a
// large backlog, relay throughput to out-of-process brokers through a TCP
// proxy that adds a network's one-way delay (network), and the cost of
// observe.ReadStatus on a large outbox (status).
//
// Everything runs in one process against one PostgreSQL cluster (an
// ephemeral one from internal/pgserver unless DATABASE_URL is set), baseline
// and contender alternating, over several rounds; the median and the spread
// (min–max) are reported, with the contender/baseline ratios. The method is
// written down in BENCHMARKS.md at the root of the module.
//
// Usage:
//
//	go run ./internal/bench [-short] [-rounds 5] [-backlog 50000] [-out bench-results]
//
// It prints the results as a Markdown table and writes them, with a PNG chart
// of relay throughput against lanes, under -out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Config holds the bench's parameters; flags fill it.
type Config struct {
	// Short runs everything at a tiny size, for CI.
	Short bool
	// Rounds is the number of rounds of every comparison.
	Rounds int
	// Backlog is the number of events drained in the relay throughput runs.
	Backlog int
	// MemBacklog is the backlog drained by the relay whose peak RSS is read.
	MemBacklog int
	// ProducerTime is how long each producer cell runs per round.
	ProducerTime time.Duration
	// LatencyTime is how long each latency cell offers load.
	LatencyTime time.Duration
	// LatencyRates are the offered loads, in events/s.
	LatencyRates []int
	// Lanes are the relay lane counts measured.
	Lanes []int
	// Procs are the counts of relay processes that drain the same backlog
	// over 4 lanes, in the relay section; the first is the baseline of
	// their ratios. Empty skips that comparison.
	Procs []int
	// Sinks are the brokers relayed to: "gochannel", "nats".
	Sinks []string
	// NetBacklog is the number of events drained per run of the network
	// section.
	NetBacklog int
	// NetDelays are the one-way delays of the network section's proxy.
	NetDelays []time.Duration
	// NetBrokers are the out-of-process brokers of the network section:
	// "nats", "rabbitmq", "kafka".
	NetBrokers []string
	// NetLanes are the relay lane counts of the network section.
	NetLanes []int
	// StatusRows is the number of rows stored in the status section's
	// outbox.
	StatusRows int
	// StatusBacklogs are the backlogs ReadStatus is timed at.
	StatusBacklogs []int
	// Only restricts the run to some sections: producer, relay, latency,
	// memory, network, status. Empty runs all.
	Only []string
	// Out is a directory, or a .md file, to write the results to; empty
	// writes nothing.
	Out string
	// CPUProfile, when set, receives a CPU profile of the whole run.
	CPUProfile string
	// Diagnostics adds the diagnostic relay contender (stock Watermill
	// with a keyset SELECT).
	Diagnostics bool
	// MemStock adds stock Watermill to the memory section (slow on a large
	// backlog: its SELECT is quadratic in the backlog).
	MemStock bool
	// Verbose logs progress to the log writer.
	Verbose bool
	// Command is the command line, for the report.
	Command string
}

// DefaultConfig returns the full-run defaults.
func DefaultConfig() Config {
	return Config{
		Rounds:         5,
		Backlog:        50_000,
		MemBacklog:     200_000,
		ProducerTime:   time.Second,
		LatencyTime:    10 * time.Second,
		LatencyRates:   []int{200, 1000},
		Lanes:          []int{1, 2, 4, 8},
		Procs:          []int{1, 2, 5},
		Sinks:          []string{sinkGoChannel, sinkNATS},
		NetBacklog:     5_000,
		NetDelays:      []time.Duration{time.Millisecond, 0},
		NetBrokers:     append([]string(nil), netBrokerNames...),
		NetLanes:       []int{1, 4, 8},
		StatusRows:     1_000_000,
		StatusBacklogs: []int{10_000, 100_000},
		Out:            "bench-results",
		Diagnostics:    true,
		Verbose:        true,
	}
}

// applyShort returns c at the tiny size of -short, keeping what the caller
// set explicitly in explicit.
func (c Config) applyShort(explicit map[string]bool) Config {
	c.Short = true
	if !explicit["rounds"] {
		c.Rounds = 1
	}
	if !explicit["backlog"] {
		c.Backlog = 2_000
	}
	if !explicit["mem-backlog"] {
		c.MemBacklog = 5_000
	}
	if !explicit["producer-time"] {
		c.ProducerTime = 150 * time.Millisecond
	}
	if !explicit["latency-time"] {
		c.LatencyTime = time.Second
	}
	if !explicit["net-backlog"] {
		c.NetBacklog = 500
	}
	if !explicit["status-rows"] {
		c.StatusRows = 20_000
	}
	if !explicit["status-backlogs"] {
		c.StatusBacklogs = []int{1_000}
	}
	return c
}

func (c Config) runs(section string) bool {
	if len(c.Only) == 0 {
		return true
	}
	for _, s := range c.Only {
		if s == section {
			return true
		}
	}
	return false
}

func (c Config) validate() error {
	var errs []string
	if c.Rounds < 1 {
		errs = append(errs, "-rounds must be at least 1")
	}
	if c.Backlog < 1 || c.MemBacklog < 1 {
		errs = append(errs, "-backlog and -mem-backlog must be at least 1")
	}
	if c.ProducerTime <= 0 || c.LatencyTime <= 0 {
		errs = append(errs, "-producer-time and -latency-time must be positive")
	}
	for _, r := range c.LatencyRates {
		if r <= 0 {
			errs = append(errs, "-latency-rates must be positive")
		}
	}
	for _, l := range c.Lanes {
		if l < 1 || l > 256 {
			errs = append(errs, "-lanes must be in 1..256")
		}
	}
	for _, p := range c.Procs {
		if p < 1 || p > 32 {
			errs = append(errs, "-procs must be in 1..32")
		}
	}
	for _, s := range c.Sinks {
		if s != sinkGoChannel && s != sinkNATS && s != sinkNATSAsync {
			errs = append(errs, fmt.Sprintf("unknown sink %q (want %s, %s or %s)", s, sinkGoChannel, sinkNATS, sinkNATSAsync))
		}
	}
	if c.NetBacklog < 1 {
		errs = append(errs, "-net-backlog must be at least 1")
	}
	for _, d := range c.NetDelays {
		if d < 0 || d > time.Second {
			errs = append(errs, "-net-delays must be in 0..1s")
		}
	}
	for _, b := range c.NetBrokers {
		if !slices.Contains(netBrokerNames, b) {
			errs = append(errs, fmt.Sprintf("unknown broker %q in -net-brokers (want %s)", b, strings.Join(netBrokerNames, ", ")))
		}
	}
	for _, l := range c.NetLanes {
		if l < 1 || l > 256 {
			errs = append(errs, "-net-lanes must be in 1..256")
		}
	}
	if c.StatusRows < 1 {
		errs = append(errs, "-status-rows must be at least 1")
	}
	for _, b := range c.StatusBacklogs {
		if b < 0 || b > c.StatusRows {
			errs = append(errs, "-status-backlogs must be in 0..-status-rows")
		}
	}
	for _, s := range c.Only {
		switch s {
		case sectionProducer, sectionRelay, sectionLatency, sectionMemory, sectionNetwork, sectionStatus:
		default:
			errs = append(errs, fmt.Sprintf("unknown section %q in -only", s))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("bench: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Section names, for -only and the report.
const (
	sectionProducer = "producer"
	sectionRelay    = "relay"
	sectionLatency  = "latency"
	sectionMemory   = "memory"
	sectionNetwork  = "network"
	sectionStatus   = "status"
)

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.Short, "short", false, "run everything at a tiny size (CI)")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds of every comparison")
	fs.IntVar(&c.Backlog, "backlog", c.Backlog, "events drained per relay throughput run")
	fs.IntVar(&c.MemBacklog, "mem-backlog", c.MemBacklog, "backlog drained by the relay whose peak RSS is measured")
	fs.DurationVar(&c.ProducerTime, "producer-time", c.ProducerTime, "duration of each producer cell per round")
	fs.DurationVar(&c.LatencyTime, "latency-time", c.LatencyTime, "duration of offered load per latency cell")
	rates := fs.String("latency-rates", joinInts(c.LatencyRates), "offered loads for the latency runs, events/s, comma-separated")
	lanes := fs.String("lanes", joinInts(c.Lanes), "relay lane counts, comma-separated")
	procs := fs.String("procs", joinInts(c.Procs), "counts of relay processes draining the same backlog over 4 lanes (the first is the ratios' baseline), comma-separated; empty skips them")
	sinks := fs.String("sinks", strings.Join(c.Sinks, ","), "brokers for the relay throughput runs: gochannel, nats (JetStream, sync PubAck), nats-async (JetStream, async PubAck)")
	fs.IntVar(&c.NetBacklog, "net-backlog", c.NetBacklog, "events drained per run of the network section")
	netDelays := fs.String("net-delays", joinDurations(c.NetDelays), "one-way delays of the network section's proxy, comma-separated")
	netBrokers := fs.String("net-brokers", strings.Join(c.NetBrokers, ","), "out-of-process brokers of the network section: nats, rabbitmq (skipped if not installed), kafka")
	netLanes := fs.String("net-lanes", joinInts(c.NetLanes), "relay lane counts of the network section, comma-separated")
	fs.IntVar(&c.StatusRows, "status-rows", c.StatusRows, "rows stored in the status section's outbox")
	statusBacklogs := fs.String("status-backlogs", joinInts(c.StatusBacklogs), "backlogs the status section times ReadStatus at, comma-separated")
	only := fs.String("only", "", "run only these sections, comma-separated: producer, relay, latency, memory, network, status")
	fs.StringVar(&c.Out, "out", c.Out, "directory (or .md file) for the Markdown results and the PNG chart; empty writes nothing")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (samples are labeled: go tool pprof -tagfocus contender=relay-4)")
	fs.BoolVar(&c.Diagnostics, "diagnostics", c.Diagnostics, "add the diagnostic relay contender: stock Watermill with a keyset SELECT")
	fs.BoolVar(&c.MemStock, "mem-stock", false, "also measure stock Watermill's peak RSS (slow: its SELECT is quadratic in the backlog)")
	quiet := fs.Bool("q", false, "no progress log")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	var err error
	if c.LatencyRates, err = parseInts(*rates); err != nil {
		return c, fmt.Errorf("bench: -latency-rates: %w", err)
	}
	if c.Lanes, err = parseInts(*lanes); err != nil {
		return c, fmt.Errorf("bench: -lanes: %w", err)
	}
	if c.Procs, err = parseInts(*procs); err != nil {
		return c, fmt.Errorf("bench: -procs: %w", err)
	}
	if c.NetDelays, err = parseDurations(*netDelays); err != nil {
		return c, fmt.Errorf("bench: -net-delays: %w", err)
	}
	if c.NetLanes, err = parseInts(*netLanes); err != nil {
		return c, fmt.Errorf("bench: -net-lanes: %w", err)
	}
	if c.StatusBacklogs, err = parseInts(*statusBacklogs); err != nil {
		return c, fmt.Errorf("bench: -status-backlogs: %w", err)
	}
	c.NetBrokers = splitList(*netBrokers)
	c.Sinks = splitList(*sinks)
	c.Only = splitList(*only)
	c.Verbose = !*quiet
	if c.Short {
		c = c.applyShort(explicit)
	}
	return c, c.validate()
}

func main() {
	if spec := os.Getenv(childEnvVar); spec != "" {
		os.Exit(childMain(spec, os.Stdout, os.Stderr))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.Command = "go run ./internal/bench " + strings.Join(os.Args[1:], " ")
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := runMain(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runMain runs the bench with cfg, printing the results to stdout and the
// progress to logw, and writes the report files.
func runMain(ctx context.Context, cfg Config, stdout, logw io.Writer) error {
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := Run(ctx, cfg, logw)
	if res != nil {
		md := res.Markdown()
		fmt.Fprintln(stdout, md)
		if cfg.Out != "" {
			paths, werr := res.Write(cfg.Out)
			if werr != nil {
				err = joinErr(err, werr)
			} else {
				fmt.Fprintf(logw, "bench: wrote %s\n", strings.Join(paths, ", "))
			}
		}
	}
	return err
}
