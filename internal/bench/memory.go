package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MemoryRow is the peak RSS of a relay process draining a backlog.
type MemoryRow struct {
	Lanes   int // 0: stock Watermill
	Backlog int
	// PeakRSS is the child's peak resident set (its VmHWM) and IdleRSS its
	// resident set once connected, before relaying, in MiB.
	PeakRSS, IdleRSS float64
	// Seconds is the drain time and EPS the resulting events/s.
	Seconds, EPS float64
}

// Name is the contender's label.
func (r MemoryRow) Name() string { return RelayRow{Lanes: r.Lanes}.Name() }

// childEnvVar, when set, makes the bench binary (or its test binary) a
// relay child: it drains one backlog and reports on stdout.
const childEnvVar = "EVENTBUS_BENCH_CHILD"

type childSpec struct {
	// Mode is empty for the memory section's drain, or
	// childModeRelayProcess, or a broker child's (childModeNATSServer,
	// childModeKafkaServer).
	Mode   string `json:",omitempty"`
	URL    string
	Lanes  int
	Expect int
	Group  string
	// CPUProfile, for a relay process, is where it writes a CPU profile
	// of its run (from "go" to "stop"); empty writes none.
	CPUProfile string `json:",omitempty"`
	// Advertise, for a Kafka broker child, is the address it tells
	// clients to connect to (the delay proxy's).
	Advertise string `json:",omitempty"`
}

type childReport struct {
	Seconds float64
	IdleKB  int64
	VmHWMKB int64
	Error   string `json:",omitempty"`
}

const memLanes = 4

func (e *env) runMemory(ctx context.Context) ([]MemoryRow, error) {
	n := e.cfg.MemBacklog
	var dbs []*relayDB
	if e.cfg.MemStock {
		stock, err := e.prepareStockDB(ctx, n, "mem_stock")
		if err != nil {
			return nil, err
		}
		stock.pool.Close()
		dbs = append(dbs, stock)
	}
	ours, err := e.prepareOutboxDB(ctx, memLanes, n, fmt.Sprintf("mem_l%d", memLanes))
	if err != nil {
		return nil, err
	}
	ours.pool.Close()
	dbs = append(dbs, ours)
	var rows []MemoryRow
	for _, d := range dbs {
		row, err := e.memoryChild(ctx, d, n)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", RelayRow{Lanes: d.lanes}.Name(), err)
		}
		e.log.logf("memory %-45s peak RSS %6.1f MiB (idle %5.1f MiB), drained %d events in %.1fs (%.0f events/s)",
			row.Name(), row.PeakRSS, row.IdleRSS, n, row.Seconds, row.EPS)
		rows = append(rows, row)
	}
	return rows, nil
}

// memoryChild re-executes this binary as a relay child draining d and reads
// its peak RSS.
func (e *env) memoryChild(ctx context.Context, d *relayDB, n int) (MemoryRow, error) {
	row := MemoryRow{Lanes: d.lanes, Backlog: n}
	exe, err := os.Executable()
	if err != nil {
		return row, err
	}
	spec, err := json.Marshal(childSpec{URL: d.url, Lanes: d.lanes, Expect: n, Group: "bench_mem"})
	if err != nil {
		return row, err
	}
	ctx, cancel := context.WithTimeout(ctx, drainTimeout(n)+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnvVar+"="+string(spec))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return row, fmt.Errorf("relay child: %w\n%s", err, lastLines(stderr.String(), 20))
	}
	var rep childReport
	if err := json.Unmarshal(lastLine(stdout.Bytes()), &rep); err != nil {
		return row, fmt.Errorf("relay child report %q: %w", stdout.String(), err)
	}
	if rep.Error != "" {
		return row, fmt.Errorf("relay child: %s", rep.Error)
	}
	// VmHWM, read by the child itself: the high-water mark of its own
	// address space. rusage's maxrss is only a fallback, since Linux carries
	// into it the RSS of the address space replaced by exec, which os/exec's
	// vfork-style clone shares with this (larger) parent process.
	peakKB := rep.VmHWMKB
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && peakKB == 0 {
		peakKB = ru.Maxrss // kilobytes on Linux
	}
	row.PeakRSS = float64(peakKB) / 1024
	row.IdleRSS = float64(rep.IdleKB) / 1024
	row.Seconds = rep.Seconds
	row.EPS = float64(n) / rep.Seconds
	return row, nil
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childMain is the relay child: it drains the backlog described by spec to
// a publisher that counts and prints a childReport as JSON; or, in
// childModeRelayProcess, it is one relay process of the processes
// comparison, driven through stdin.
func childMain(spec string, stdout, stderr io.Writer) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err == nil {
		switch s.Mode {
		case childModeRelayProcess:
			return relayProcessMain(s, os.Stdin, stdout, stderr)
		case childModeNATSServer, childModeKafkaServer:
			return brokerChildMain(s, os.Stdin, stdout)
		}
	}
	rep, err := runChild(spec, stderr)
	if err != nil {
		rep.Error = err.Error()
	}
	b, _ := json.Marshal(rep)
	fmt.Fprintln(stdout, string(b))
	if err != nil {
		return 1
	}
	return 0
}

func runChild(spec string, stderr io.Writer) (childReport, error) {
	var rep childReport
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return rep, fmt.Errorf("child spec: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout(s.Expect))
	defer cancel()
	pool, err := openPool(ctx, s.URL, int32(max(s.Lanes, 1)+4))
	if err != nil {
		return rep, err
	}
	defer pool.Close()
	// A publisher that counts and drops: the GoChannel's publish spawns
	// goroutines that queue up when the relay outpaces its subscriber,
	// which would measure the sink's memory rather than the relay's.
	run := countingSink(s.Expect)
	rep.IdleKB = procStatusKB("VmRSS")
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	begin := time.Now()
	stop, failed, err := startRelay(ctx, &relayDB{lanes: s.Lanes, pool: pool, url: s.URL}, run.pub, s.Group, logger)
	if err != nil {
		return rep, err
	}
	err = run.wait(ctx, failed)
	rep.Seconds = time.Since(begin).Seconds()
	rep.VmHWMKB = procStatusKB("VmHWM")
	if stopErr := stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	return rep, err
}

// procStatusKB reads a "kB" field of /proc/self/status.
func procStatusKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && k == field {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
