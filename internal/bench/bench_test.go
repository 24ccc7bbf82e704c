package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edupulse/eventbus/internal/pgserver"
)

func TestMain(m *testing.M) {
	// The memory section re-executes the running binary, here the test
	// binary, as a relay child.
	if spec := os.Getenv(childEnvVar); spec != "" {
		os.Exit(childMain(spec, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestBenchShort runs the whole harness at its tiny -short size, so that
// the benchmarks keep compiling and working, and checks that every section
// produced sane numbers.
func TestBenchShort(t *testing.T) {
	if os.Getenv("DATABASE_URL") == "" {
		if _, err := pgserver.FindBinDir(); errors.Is(err, pgserver.ErrNoBinaries) {
			if os.Getenv("CI") == "true" {
				t.Fatalf("no PostgreSQL binaries and no DATABASE_URL: %v", err)
			}
			t.Skipf("no PostgreSQL binaries and no DATABASE_URL: %v", err)
		}
	}
	cfg, err := parseFlags([]string{"-short", "-q"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	// Smaller still than -short: this runs on every CI run.
	cfg.Backlog = 1_000
	cfg.MemBacklog = 2_000
	cfg.ProducerTime = 100 * time.Millisecond
	cfg.LatencyTime = 500 * time.Millisecond
	cfg.Sinks = []string{sinkGoChannel, sinkNATS, sinkNATSAsync}
	cfg.MemStock = true
	cfg.Out = filepath.Join(t.TempDir(), "out")
	cfg.Command = "TestBenchShort"
	// The network and status sections have a test of their own.
	cfg.Only = []string{sectionProducer, sectionRelay, sectionLatency, sectionMemory}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logBuf strings.Builder
	begin := time.Now()
	res, err := Run(ctx, cfg, &logBuf)
	t.Logf("harness ran in %s", time.Since(begin).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, logBuf.String())
	}

	if len(res.Producer) != 4 {
		t.Errorf("producer rows = %d, want 4", len(res.Producer))
	}
	for _, p := range res.Producer {
		for _, v := range producerVariants {
			if s := p.TPS[v]; !(s.Median > 0) {
				t.Errorf("producer %d events/tx, %d producers, %s: %v tx/s", p.Events, p.Producers, v, s.Median)
			}
		}
		if !(p.CostRatio.Median > 0) {
			t.Errorf("producer cost ratio %v", p.CostRatio.Median)
		}
	}

	if want := len(cfg.Sinks) * (2 + len(cfg.Lanes)); len(res.Relay) != want { // stock, its keyset diagnostic, the lanes
		t.Errorf("relay rows = %d, want %d", len(res.Relay), want)
	}
	for _, r := range res.Relay {
		if !(r.EPS.Median > 0) || !(r.Ratio.Median > 0) {
			t.Errorf("relay %s %s: %v events/s, ratio %v", r.Sink, r.Name(), r.EPS.Median, r.Ratio.Median)
		}
	}

	if len(res.Processes) != len(cfg.Procs) {
		t.Errorf("relay processes rows = %d, want %d", len(res.Processes), len(cfg.Procs))
	}
	for i, p := range res.Processes {
		if p.Processes != cfg.Procs[i] || !(p.EPS.Median > 0) || !(p.RelayCPU > 0) || p.Duplicates < 0 {
			t.Errorf("relay processes row %d: %+v", i, p)
		}
		if i == 0 && p.Ratio.Median != 1 {
			t.Errorf("%d relay process(es) is the baseline, ratio %v", p.Processes, p.Ratio.Median)
		}
		if !(p.Ratio.Median > 0) {
			t.Errorf("%d relay process(es): ratio %v", p.Processes, p.Ratio.Median)
		}
	}

	if want := len(cfg.LatencyRates) * len(latencyModes); len(res.Latency) != want {
		t.Errorf("latency rows = %d, want %d", len(res.Latency), want)
	}
	for _, l := range res.Latency {
		if l.Events == 0 || l.P50 < 0 || l.P99 < l.P50 || l.Max < l.P99 {
			t.Errorf("latency %s at %d/s: %d events, p50 %v, p99 %v, max %v", l.Mode, l.Rate, l.Events, l.P50, l.P99, l.Max)
		}
	}

	if len(res.Memory) != 2 {
		t.Errorf("memory rows = %d, want 2", len(res.Memory))
	}
	for _, m := range res.Memory {
		if !(m.PeakRSS > 0) || m.PeakRSS < m.IdleRSS || !(m.EPS > 0) {
			t.Errorf("memory %s: peak %v MiB, idle %v MiB, %v events/s", m.Name(), m.PeakRSS, m.IdleRSS, m.EPS)
		}
	}

	md := res.Markdown()
	for _, heading := range []string{"## Targets", "## 1. Producer cost", "## 2. Relay throughput", "## 2b. Relay processes", "## 3. End-to-end latency", "## 4. Memory"} {
		if !strings.Contains(md, heading) {
			t.Errorf("results lack %q:\n%s", heading, md)
		}
	}
	if n := len(res.Targets); n != 4+len(cfg.Sinks)+1 {
		t.Errorf("targets = %d, want %d", n, 4+len(cfg.Sinks)+1)
	}

	paths, err := res.Write(cfg.Out)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() == 0 {
			t.Errorf("output %s: %v (size %d)", p, err, sizeOf(fi))
		}
	}
	if len(paths) != 2 || !strings.HasSuffix(paths[1], ".png") {
		t.Errorf("outputs = %v, want the Markdown and the PNG chart", paths)
	}
}

// TestBenchShortNetworkStatus runs the network and status sections at a
// tiny size: relays through the delay proxy to each broker in a child
// process (RabbitMQ where it is installed), and ReadStatus against a
// filled outbox, whose backlog must come out exact.
func TestBenchShortNetworkStatus(t *testing.T) {
	if os.Getenv("DATABASE_URL") == "" {
		if _, err := pgserver.FindBinDir(); errors.Is(err, pgserver.ErrNoBinaries) {
			if os.Getenv("CI") == "true" {
				t.Fatalf("no PostgreSQL binaries and no DATABASE_URL: %v", err)
			}
			t.Skipf("no PostgreSQL binaries and no DATABASE_URL: %v", err)
		}
	}
	cfg, err := parseFlags([]string{"-short", "-q", "-only", "network,status"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NetBacklog = 200
	cfg.StatusRows = 5_000
	cfg.StatusBacklogs = []int{0, 700}
	cfg.Out = ""
	cfg.Command = "TestBenchShortNetworkStatus"

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var logBuf strings.Builder
	begin := time.Now()
	res, err := Run(ctx, cfg, &logBuf)
	t.Logf("harness ran in %s", time.Since(begin).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, logBuf.String())
	}

	brokers := len(cfg.NetBrokers) - len(res.NetSkipped)
	for _, s := range res.NetSkipped {
		if s.Broker != brokerRabbitMQ || os.Getenv("CI") == "true" {
			t.Errorf("broker %s skipped: %s", s.Broker, s.Reason)
		}
	}
	if want := brokers * len(cfg.NetDelays) * (1 + len(cfg.NetLanes)); len(res.Network) != want {
		t.Errorf("network rows = %d, want %d", len(res.Network), want)
	}
	for _, r := range res.Network {
		if !(r.EPS.Median > 0) || !(r.Ratio.Median > 0) || (r.Lanes == lanesStock && r.Ratio.Median != 1) {
			t.Errorf("network %s %s %s: %v events/s, ratio %v", r.Broker, delayLabel(r.Delay), r.Name(), r.EPS.Median, r.Ratio.Median)
		}
		if (r.Delay == 0) != (r.LateP99 == 0) || r.LateP50 > r.LateP99 {
			t.Errorf("network %s %s %s: proxy late p50 %v µs, p99 %v µs", r.Broker, delayLabel(r.Delay), r.Name(), r.LateP50, r.LateP99)
		}
		if r.Delay > 0 && !(r.BrokerCPU > 0) {
			t.Errorf("network %s %s %s: broker CPU %v µs/event", r.Broker, delayLabel(r.Delay), r.Name(), r.BrokerCPU)
		}
	}

	if len(res.Status) != len(cfg.StatusBacklogs) {
		t.Errorf("status rows = %d, want %d", len(res.Status), len(cfg.StatusBacklogs))
	}
	for _, s := range res.Status {
		if s.GotBacklog != int64(s.Backlog) || s.Stored != cfg.StatusRows || !(s.ReadStatus.Median > 0) || !(s.Before.Median > 0) || !(s.Scrape.Median > 0) {
			t.Errorf("status row %+v", s)
		}
		if s.BeforeRowsRead < int64(cfg.StatusRows) || s.RowsRead < int64(s.Backlog) {
			t.Errorf("status row: lane rows read per call %d (backlog %d), before %d (want every row of %d)", s.RowsRead, s.Backlog, s.BeforeRowsRead, cfg.StatusRows)
		}
		if s.StoredEstimated == (s.GotStored == int64(cfg.StatusRows)) && !s.StoredEstimated {
			t.Errorf("status row: stored %d exact, want %d", s.GotStored, cfg.StatusRows)
		}
	}

	md := res.Markdown()
	for _, heading := range []string{"## Targets", "## 5. Relay throughput over a network", "## 6. Status"} {
		if !strings.Contains(md, heading) {
			t.Errorf("results lack %q:\n%s", heading, md)
		}
	}
	if !strings.Contains(md, "Network: relay to nats through the 1ms proxy, 4 lanes / stock Watermill") {
		t.Errorf("results lack the network target:\n%s", md)
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-rounds", "3", "-lanes", "1,4", "-only", "relay,memory", "-sinks", "gochannel"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rounds != 3 || len(c.Lanes) != 2 || c.Lanes[1] != 4 || !c.runs(sectionRelay) || c.runs(sectionProducer) || len(c.Sinks) != 1 {
		t.Fatalf("parsed %+v", c)
	}
	// -short shrinks what was not set explicitly.
	c, err = parseFlags([]string{"-short", "-rounds", "2"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rounds != 2 || c.Backlog != 2_000 || c.LatencyTime != time.Second {
		t.Fatalf("short: %+v", c)
	}
	if c.Procs[0] != 1 || c.Procs[2] != 5 {
		t.Fatalf("default -procs: %v", c.Procs)
	}
	if c, err = parseFlags([]string{"-procs", ""}, os.Stderr); err != nil || len(c.Procs) != 0 {
		t.Fatalf("-procs '': %v, %v", c.Procs, err)
	}
	if _, err := parseFlags([]string{"-procs", "0"}, os.Stderr); err == nil {
		t.Fatal("-procs 0 accepted")
	}
	if _, err := parseFlags([]string{"-sinks", "kafka"}, os.Stderr); err == nil {
		t.Fatal("unknown sink accepted")
	}
	if _, err := parseFlags([]string{"-only", "everything"}, os.Stderr); err == nil {
		t.Fatal("unknown section accepted")
	}
	if c, err = parseFlags([]string{"-net-delays", "2ms,0s", "-net-brokers", "nats"}, os.Stderr); err != nil ||
		len(c.NetDelays) != 2 || c.NetDelays[0] != 2*time.Millisecond || c.NetDelays[1] != 0 || len(c.NetBrokers) != 1 {
		t.Fatalf("-net-delays 2ms,0s -net-brokers nats: %+v, %v", c, err)
	}
	if c.NetDelays[0] != DefaultConfig().NetDelays[0]*2 {
		t.Fatalf("default -net-delays: %v", DefaultConfig().NetDelays)
	}
	if _, err := parseFlags([]string{"-net-brokers", "redis"}, os.Stderr); err == nil {
		t.Fatal("unknown broker accepted")
	}
}

func TestSummaryAndPercentile(t *testing.T) {
	s := summarize([]float64{5, 1, 3, 2, 4})
	if s.Median != 3 || s.Min != 1 || s.Max != 5 || s.N != 5 {
		t.Fatalf("summarize = %+v", s)
	}
	if s := summarize([]float64{1, 2, 3, 4}); s.Median != 2.5 {
		t.Fatalf("even median = %v", s.Median)
	}
	sorted := make([]float64, 100)
	for i := range sorted {
		sorted[i] = float64(i + 1)
	}
	if p := percentile(sorted, 99); p != 99 {
		t.Fatalf("p99 of 1..100 = %v", p)
	}
	if p := percentile(sorted, 50); p != 50 {
		t.Fatalf("p50 of 1..100 = %v", p)
	}
	if p := percentile([]float64{7}, 99); p != 7 {
		t.Fatalf("p99 of one = %v", p)
	}
}
