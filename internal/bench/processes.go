package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// ProcessesRow is one count of relay processes draining the same backlog
// over procLanes lanes, under one consumer group, to GoChannel.
type ProcessesRow struct {
	Processes int
	// EPS is events/s, from the moment the backlog appeared (the relays
	// already running, idle) until the last event was delivered in any of
	// them.
	EPS Summary
	// Ratio is EPS / EPS of the first process count (normally 1) in the
	// same round.
	Ratio Summary
	// RelayCPU, PGCPU and BenchCPU are CPU microseconds per event of the
	// relay processes together, of PostgreSQL and of the bench process
	// (which only starts the children and asks them for their counts),
	// medians over the rounds.
	RelayCPU, PGCPU, BenchCPU float64
	// Duplicates is the largest number of events delivered more than once
	// in a round (at least once allows them; lanes claimed per batch should
	// make them rare).
	Duplicates int
	// Other is the largest share of the machine's CPU that other processes
	// took during a run, in percent of one core.
	Other float64
}

// procLanes is the lane count of the relay processes comparison.
const procLanes = targetLanes

// childModeRelayProcess makes a child one relay process of the processes
// comparison; the default mode is the memory section's drain.
const childModeRelayProcess = "relay-process"

// procIdleWait is how long the relay processes run idle before a drain:
// a poll interval and a margin, so that every lane has queried at least
// once.
const procIdleWait = 1500 * time.Millisecond

// groupAtEnd sets the offsets of group in every lane of d at the lane's
// last row: the relays then find nothing to relay.
func groupAtEnd(ctx context.Context, d *relayDB, group string) error {
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		for lane := range d.lanes {
			_, err := tx.Exec(ctx, `INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id)
				SELECT $1, "offset", transaction_id FROM "watermill_`+schema.LaneTopic(lane)+`"
				ORDER BY transaction_id DESC, "offset" DESC LIMIT 1
				ON CONFLICT (consumer_group) DO UPDATE SET offset_acked = excluded.offset_acked,
					last_processed_transaction_id = excluded.last_processed_transaction_id`,
				bus.LaneConsumerGroup(group, lane))
			if err != nil {
				return fmt.Errorf("position %s at the end of lane %d: %w", group, lane, err)
			}
		}
		return nil
	})
}

// groupAtStart sets the offsets of group in every lane of d back to the
// lane's start and NOTIFYs every lane, in one transaction: to the running
// relays (which read their offsets at each batch), the whole backlog
// appears at once.
func groupAtStart(ctx context.Context, d *relayDB, group string) error {
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		for lane := range d.lanes {
			if _, err := tx.Exec(ctx, `UPDATE eventbus_offsets SET offset_acked = 0, last_processed_transaction_id = '0'
				WHERE consumer_group = $1`, bus.LaneConsumerGroup(group, lane)); err != nil {
				return fmt.Errorf("rewind %s in lane %d: %w", group, lane, err)
			}
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, schema.NotifyChannel, "watermill_"+schema.LaneTopic(lane)); err != nil {
				return fmt.Errorf("notify lane %d: %w", lane, err)
			}
		}
		return nil
	})
}

// waitListening waits until procs relays LISTEN on d's database.
func waitListening(ctx context.Context, d *relayDB, procs int) error {
	for {
		var listening int
		if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN '||$1`, schema.NotifyChannel).Scan(&listening); err != nil {
			return fmt.Errorf("count listening relays: %w", err)
		}
		if listening >= procs {
			return nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%d of %d relay processes listening: %w", listening, procs, ctx.Err())
		}
	}
}

// procPollInterval is how often the bench asks the relay processes how
// many events they delivered. The drain time is taken from the processes'
// own clock of their last delivery, not from this poll.
const procPollInterval = 10 * time.Millisecond

// runProcesses drains d, a filled outbox of procLanes lanes, with each
// count of relay processes of e.cfg.Procs, over e.cfg.Rounds rounds, the
// order of the counts reversed every other round.
func (e *env) runProcesses(ctx context.Context, d *relayDB) ([]ProcessesRow, error) {
	counts := e.cfg.Procs
	eps := map[int][]float64{}
	ratio := map[int][]float64{}
	relayCPU := map[int][]float64{}
	pgCPU := map[int][]float64{}
	benchCPU := map[int][]float64{}
	dups := map[int]int{}
	other := map[int]float64{}
	for round := range e.cfg.Rounds {
		order := append([]int(nil), counts...)
		if round%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		got := map[int]float64{}
		for _, n := range order {
			group := fmt.Sprintf("bench_procs_p%d_r%d", n, round)
			var r procResult
			var err error
			pprof.Do(ctx, pprof.Labels("section", sectionRelay, "sink", sinkGoChannel, "contender", fmt.Sprintf("processes-%d", n)), func(ctx context.Context) {
				r, err = e.drainProcesses(ctx, d, n, group, e.cfg.Backlog)
			})
			if err != nil {
				return nil, fmt.Errorf("round %d, %d relay process(es): %w", round+1, n, err)
			}
			eps[n] = append(eps[n], r.eps)
			relayCPU[n] = append(relayCPU[n], r.relayUS)
			pgCPU[n] = append(pgCPU[n], r.pgUS)
			benchCPU[n] = append(benchCPU[n], r.benchUS)
			dups[n] = max(dups[n], r.duplicates)
			other[n] = max(other[n], r.otherPct)
			got[n] = r.eps
			e.log.logf("relay processes round %d, %d process(es) over %d lanes: %8.0f events/s  (%.2fs; CPU/event: relays %.0fµs, postgres %.0fµs, bench %.0fµs; %d duplicates; others %.0f%%)",
				round+1, n, procLanes, r.eps, r.elapsed.Seconds(), r.relayUS, r.pgUS, r.benchUS, r.duplicates, r.otherPct)
		}
		for _, n := range counts {
			ratio[n] = append(ratio[n], got[n]/got[counts[0]])
		}
	}
	rows := make([]ProcessesRow, 0, len(counts))
	for _, n := range counts {
		rows = append(rows, ProcessesRow{Processes: n, EPS: summarize(eps[n]), Ratio: summarize(ratio[n]),
			RelayCPU: summarize(relayCPU[n]).Median, PGCPU: summarize(pgCPU[n]).Median, BenchCPU: summarize(benchCPU[n]).Median,
			Duplicates: dups[n], Other: other[n]})
	}
	return rows, nil
}

type procResult struct {
	eps                    float64
	elapsed                time.Duration
	relayUS, pgUS, benchUS float64
	duplicates             int
	otherPct               float64
}

// relayChild is one running relay process.
type relayChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr lockedBuffer
}

// lockedBuffer is a bytes.Buffer safe to read while os/exec copies a
// child's output into it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// request sends a command and reads the child's one-line JSON answer.
func (c *relayChild) request(cmd string) (procReport, error) {
	var rep procReport
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return rep, fmt.Errorf("relay process: send %s: %w\n%s", cmd, err, lastLines(c.stderr.String(), 20))
	}
	return c.read()
}

func (c *relayChild) read() (procReport, error) {
	var rep procReport
	if !c.out.Scan() {
		return rep, fmt.Errorf("relay process exited: %v\n%s", c.out.Err(), lastLines(c.stderr.String(), 20))
	}
	if err := json.Unmarshal(c.out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("relay process answered %q: %w", c.out.Text(), err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("relay process: %s", rep.Error)
	}
	return rep, nil
}

// procReport is a relay process's answer to a command.
type procReport struct {
	// Delivered is the number of events its GoChannel subscribers
	// received, and LastUnixNano when the last one arrived.
	Delivered    int64
	LastUnixNano int64
	Error        string `json:",omitempty"`
}

// drainProcesses starts procs relay processes (this binary re-executed) on
// d under one consumer group and times their draining n events. The
// processes start their relays first and idle; the clock starts when the
// backlog appears to them.
func (e *env) drainProcesses(ctx context.Context, d *relayDB, procs int, group string, n int) (procResult, error) {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout(n)+30*time.Second)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		return procResult{}, err
	}
	var children []*relayChild
	defer func() {
		// Closing stdin stops a child that is still running; its relay
		// then shuts down and it exits.
		for _, c := range children {
			_ = c.stdin.Close()
		}
		for _, c := range children {
			_ = c.cmd.Wait()
		}
	}()
	for i := range procs {
		cs := childSpec{Mode: childModeRelayProcess, URL: d.url, Lanes: d.lanes, Group: group}
		if e.cfg.CPUProfile != "" {
			cs.CPUProfile = fmt.Sprintf("%s.%s-%d", e.cfg.CPUProfile, group, i+1)
		}
		spec, err := json.Marshal(cs)
		if err != nil {
			return procResult{}, err
		}
		c := &relayChild{cmd: exec.CommandContext(ctx, exe)}
		c.cmd.Env = append(os.Environ(), childEnvVar+"="+string(spec))
		c.cmd.Stderr = &c.stderr
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			return procResult{}, err
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			return procResult{}, err
		}
		c.out = bufio.NewScanner(stdout)
		if err := c.cmd.Start(); err != nil {
			return procResult{}, fmt.Errorf("start relay process: %w", err)
		}
		children = append(children, c)
	}
	for _, c := range children {
		if _, err := c.read(); err != nil { // ready: connected, sink subscribed
			return procResult{}, err
		}
	}

	pids := make([]int, len(children))
	for i, c := range children {
		pids[i] = c.cmd.Process.Pid
	}
	// The relays start with the group's offsets at the end of every lane
	// (groupAtEnd), and run until each process LISTENs and a poll
	// interval has passed: started, connected and idle, as relays are when
	// a backlog builds up. Their start (connections, PostgreSQL backends,
	// plans) is thus left out of the drain, for 1 process as for 5.
	if err := groupAtEnd(ctx, d, group); err != nil {
		return procResult{}, err
	}
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return procResult{}, fmt.Errorf("relay process: %w", err)
		}
	}
	if err := waitListening(ctx, d, procs); err != nil {
		return procResult{}, err
	}
	select {
	case <-time.After(procIdleWait):
	case <-ctx.Done():
		return procResult{}, ctx.Err()
	}
	before, childBefore := takeCPU(), processesCPU(pids)
	begin := time.Now()
	// The clock starts when the backlog appears: the offsets go back to
	// the lanes' start, and a NOTIFY per lane wakes the relays.
	if err := groupAtStart(ctx, d, group); err != nil {
		return procResult{}, err
	}
	t := time.NewTicker(procPollInterval)
	defer t.Stop()
	var delivered, last int64
	for delivered < int64(n) {
		select {
		case <-ctx.Done():
			return procResult{}, fmt.Errorf("%w (%d of %d delivered)", ctx.Err(), delivered, n)
		case <-t.C:
		}
		delivered, last = 0, 0
		for _, c := range children {
			rep, err := c.request("count")
			if err != nil {
				return procResult{}, err
			}
			delivered += rep.Delivered
			last = max(last, rep.LastUnixNano)
		}
	}
	used, childUsed := takeCPU().sub(before), processesCPU(pids)-childBefore
	// The drain ended with the last delivery in any process; the wall
	// clock is shared by the processes of the machine.
	elapsed := time.Unix(0, last).Sub(begin.Round(0))

	// Stop the relays and read the final counts: GoChannel hands messages
	// to its subscribers asynchronously, so more may have arrived since.
	var final int64
	for _, c := range children {
		rep, err := c.request("stop")
		if err != nil {
			return procResult{}, err
		}
		final += rep.Delivered
	}
	for i, c := range children {
		if msg := strings.TrimSpace(c.stderr.String()); msg != "" {
			e.log.logf("relay process %d of %d logged:\n%s", i+1, procs, lastLines(msg, 20))
		}
	}
	pgUsed := used.pg
	r := procResult{
		eps:        float64(n) / elapsed.Seconds(),
		elapsed:    elapsed,
		relayUS:    float64(childUsed.Microseconds()) / float64(n),
		pgUS:       float64(pgUsed.Microseconds()) / float64(n),
		benchUS:    float64(used.self.Microseconds()) / float64(n),
		duplicates: int(final - int64(n)),
		otherPct:   100 * max(0, used.other()-childUsed).Seconds() / used.elapsed.Seconds(),
	}
	return r, nil
}

// processesCPU sums the user and system CPU time of the processes pids, from
// /proc (they are running: getrusage would see them only once reaped).
func processesCPU(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		end := bytes.LastIndexByte(b, ')')
		if end < 0 {
			continue
		}
		// After the comm: state(0) ppid(1) ... utime(11) stime(12).
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
	}
	return time.Duration(ticks) * clockTick
}

// relayProcessMain is a relay process of the processes comparison: it
// connects to spec's database, subscribes a counting GoChannel, says it is
// ready, starts relaying on "go", answers "count" with what it delivered,
// and on "stop" (or the end of stdin) stops its relay, answers and exits.
// Every answer is one JSON line on stdout.
func relayProcessMain(s childSpec, stdin io.Reader, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	fail := func(err error) int {
		_ = enc.Encode(procReport{Error: err.Error()})
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := openPool(ctx, s.URL, int32(max(s.Lanes, 1)+4))
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	counter, err := newGoChannelCounter(ctx)
	if err != nil {
		return fail(err)
	}
	defer counter.close()
	if err := enc.Encode(counter.report()); err != nil { // ready
		return 1
	}
	in := bufio.NewScanner(stdin)
	if !in.Scan() || in.Text() != "go" {
		return 0 // the bench gave up before the start
	}
	if s.CPUProfile != "" {
		f, err := os.Create(s.CPUProfile)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stop, failed, err := startRelay(ctx, &relayDB{lanes: s.Lanes, pool: pool, url: s.URL}, counter.pub, s.Group, logger)
	if err != nil {
		return fail(err)
	}
	var runErr error
	checkFailed := func() {
		select {
		case err := <-failed:
			if runErr == nil {
				runErr = fmt.Errorf("relay stopped: %v", err)
			}
		default:
		}
	}
	for in.Scan() {
		switch in.Text() {
		case "count":
			checkFailed()
			rep := counter.report()
			if runErr != nil {
				rep.Error = runErr.Error()
			}
			if err := enc.Encode(rep); err != nil {
				return 1
			}
		case "stop":
			checkFailed()
			if err := stop(); err != nil && runErr == nil {
				runErr = fmt.Errorf("stop: %w", err)
			}
			rep := counter.report()
			if runErr != nil {
				rep.Error = runErr.Error()
			}
			_ = enc.Encode(rep)
			if runErr != nil {
				return 1
			}
			return 0
		default:
			return fail(fmt.Errorf("unknown command %q", in.Text()))
		}
	}
	_ = stop()
	return 0
}

// goChannelCounter is a GoChannel whose subscribers, one per event topic,
// ack at once and count, recording when the last event arrived.
type goChannelCounter struct {
	pub   message.Publisher
	count atomic.Int64
	last  atomic.Int64 // unix nanoseconds
	close func()
}

func newGoChannelCounter(ctx context.Context) (*goChannelCounter, error) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	subCtx, cancel := context.WithCancel(ctx)
	c := &goChannelCounter{pub: gc, close: func() { cancel(); _ = gc.Close() }}
	for _, topic := range gen.Registry().Names() {
		ch, err := gc.Subscribe(subCtx, topic)
		if err != nil {
			c.close()
			return nil, err
		}
		go func() {
			for msg := range ch {
				msg.Ack()
				// The time first, then the count (see report); the largest
				// time wins, whichever subscriber stores it.
				now := time.Now().UnixNano()
				for {
					prev := c.last.Load()
					if prev >= now || c.last.CompareAndSwap(prev, now) {
						break
					}
				}
				c.count.Add(1)
			}
		}()
	}
	return c, nil
}

func (c *goChannelCounter) report() procReport {
	// The count first: the subscribers store the time before they count,
	// so the time read after it is that of the last event counted, or later.
	count := c.count.Load()
	return procReport{Delivered: count, LastUnixNano: c.last.Load()}
}
