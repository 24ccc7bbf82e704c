package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/edupulse/eventbus/bus"
)

// Results is everything one run measured.
type Results struct {
	Config   Config
	Meta     Meta
	Producer []ProducerRow
	Relay    []RelayRow
	// Processes is the relay processes comparison (part of the relay
	// section).
	Processes []ProcessesRow
	Latency   []LatencyRow
	Memory    []MemoryRow
	// Network is the network section: relays publishing through the delay
	// proxy to out-of-process brokers; NetSkipped the brokers it could
	// not run.
	Network    []NetRow
	NetSkipped []NetSkip
	// Status is the status section: the cost of ReadStatus.
	Status  []StatusRow
	Targets []Target
}

// Target is one goal of the issue, evaluated on this run.
type Target struct {
	Name, Want, Got string
	Met             bool
}

// Targets of the issue.
const (
	targetProducerCost = 1.3  // publish cost / raw insert cost, at most
	targetRelayRatio   = 3.0  // 4 lanes / stock, at least
	targetNotifyP99    = 50.0 // ms at 200 events/s, below
	targetLanes        = 4
	targetRate         = 200
	// Issue 13: through the 1 ms proxy to JetStream, 4 lanes at 10x stock;
	// ReadStatus under 50 ms at 1M stored rows and a backlog of 10k.
	targetNetRatio      = 10.0
	targetNetDelay      = time.Millisecond
	targetStatusMS      = 50.0
	targetStatusStored  = 1_000_000
	targetStatusBacklog = 10_000
)

func (r *Results) evaluateTargets() {
	r.Targets = nil
	for _, p := range r.Producer {
		got := p.CostRatio
		r.Targets = append(r.Targets, Target{
			Name: fmt.Sprintf("Producer cost, %d event(s)/tx, %d producer(s): publish / raw INSERT", p.Events, p.Producers),
			Want: fmt.Sprintf("≤ %.1fx", targetProducerCost),
			Got:  fmtRatio(got),
			Met:  got.Median <= targetProducerCost,
		})
	}
	for _, row := range r.Relay {
		if row.Lanes != targetLanes {
			continue
		}
		r.Targets = append(r.Targets, Target{
			Name: fmt.Sprintf("Relay throughput to %s: %d lanes / stock Watermill", row.Sink, targetLanes),
			Want: fmt.Sprintf("≥ %.0fx", targetRelayRatio),
			Got:  fmtRatio(row.Ratio),
			Met:  row.Ratio.Median >= targetRelayRatio,
		})
	}
	for _, row := range r.Network {
		if row.Broker != brokerNATS || row.Delay != targetNetDelay || row.Lanes != targetLanes {
			continue
		}
		r.Targets = append(r.Targets, Target{
			Name: fmt.Sprintf("Network: relay to %s through the %s proxy, %d lanes / stock Watermill", row.Broker, delayLabel(row.Delay), targetLanes),
			Want: fmt.Sprintf("≥ %.0fx", targetNetRatio),
			Got:  fmtRatio(row.Ratio),
			Met:  row.Ratio.Median >= targetNetRatio,
		})
	}
	for _, row := range r.Status {
		if row.Stored != targetStatusStored || row.Backlog != targetStatusBacklog {
			continue
		}
		r.Targets = append(r.Targets, Target{
			Name: fmt.Sprintf("Status: ReadStatus with %s stored rows and a backlog of %s", fmtCount(float64(row.Stored)), fmtCount(float64(row.Backlog))),
			Want: fmt.Sprintf("< %.0f ms", targetStatusMS),
			Got:  fmtSummary(row.ReadStatus, "%.1f") + " ms",
			Met:  row.ReadStatus.Median < targetStatusMS,
		})
	}
	for _, row := range r.Latency {
		if row.Mode != modeNotify || row.Rate != targetRate {
			continue
		}
		r.Targets = append(r.Targets, Target{
			Name: fmt.Sprintf("Latency with NOTIFY at %d events/s: p99", targetRate),
			Want: fmt.Sprintf("< %.0f ms", targetNotifyP99),
			Got:  fmt.Sprintf("%.1f ms", row.P99),
			Met:  row.P99 < targetNotifyP99,
		})
	}
}

func fmtSummary(s Summary, format string) string {
	if s.N <= 1 {
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.Median, s.Min, s.Max)
}

func fmtRatio(s Summary) string {
	if s.N <= 1 {
		return fmt.Sprintf("%.2fx", s.Median)
	}
	return fmt.Sprintf("**%.2fx** (%.2f–%.2f)", s.Median, s.Min, s.Max)
}

func fmtCount(v float64) string {
	n := int64(math.Round(v))
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtCounts(s Summary) string {
	if s.N <= 1 {
		return fmtCount(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtCount(s.Median), fmtCount(s.Min), fmtCount(s.Max))
}

func yesNo(b bool) string {
	if b {
		return "**met**"
	}
	return "**missed**"
}

// Markdown renders the results.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c, m := r.Config, r.Meta
	w("# eventbus benchmark results\n\n")
	w("- Command: `%s`\n", c.Command)
	w("- Started %s, took %s; rounds: %d; short: %v\n", m.Started.UTC().Format(time.RFC3339), m.Duration.Round(time.Second), c.Rounds, c.Short)
	w("- Machine: %d CPUs (%s), %s memory, Linux %s; load average before %s, after %s\n", m.NumCPU, m.CPUModel, m.MemTotal, m.Kernel, m.LoadBefore, m.LoadAfter)
	w("- %s; %s (%s)\n", m.GoVersion, m.Postgres, m.PGSettings)
	if m.Git != "" {
		w("- Source: %s\n", m.Git)
	}
	if len(m.SectionTimes) > 0 {
		var parts []string
		for _, s := range m.SectionTimes {
			parts = append(parts, fmt.Sprintf("%s %s", s.Name, s.Took.Round(time.Second)))
		}
		w("- Section times: %s\n", strings.Join(parts, ", "))
	}
	w("\nMedians over the rounds, with the spread (min–max) in parentheses. Ratios are computed per round (baseline and contender ran back to back) and then summarized. \"Others\" is the largest share of the machine's CPU that processes other than the bench and its PostgreSQL took during a run (100%% = one core of %d): the machine is shared, read ratios first.\n", m.NumCPU)

	if len(r.Targets) > 0 {
		w("\n## Targets\n\n| target | want | got | |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			w("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, yesNo(t.Met))
		}
	}

	if len(r.Producer) > 0 {
		w("\n## 1. Producer cost\n\nTransactions/s of one connection per producer, each transaction BEGIN, the insert, COMMIT. Baseline: one raw pgx INSERT (multi-row for 10) of rows of the outbox's exact bytes into a table of watermill-sql v3's layout. Contender: `bus.Outbox.Publish` of the same number of events of one aggregate. Cost ratio = raw tx/s ÷ publish tx/s (≤ 1.3 is the target). Diagnostic: the raw INSERT into an outbox lane table (NOTIFY trigger, two more indexes).\n\n")
		w("| events/tx | producers | raw INSERT tx/s | Outbox.Publish tx/s | **cost ratio** publish/raw | raw INSERT into lane table tx/s | cost ratio lane table/raw | CPU µs/tx bench: raw / publish | CPU µs/tx PostgreSQL: raw / lane / publish | others |\n")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range r.Producer {
			w("| %d | %d | %s | %s | %s | %s | %s | %.0f / %.0f | %.0f / %.0f / %.0f | %.0f%% |\n",
				p.Events, p.Producers, fmtCounts(p.TPS[prodRaw]), fmtCounts(p.TPS[prodPublish]), fmtRatio(p.CostRatio),
				fmtCounts(p.TPS[prodRawLane]), fmtRatio(p.LaneCostRatio),
				p.GoCPU[prodRaw], p.GoCPU[prodPublish], p.PGCPU[prodRaw], p.PGCPU[prodRawLane], p.PGCPU[prodPublish], p.Other)
		}
	}

	if len(r.Relay) > 0 {
		w("\n## 2. Relay throughput\n\nA backlog of %s events drained from the relay's start until the last one was delivered (GoChannel: counted by subscribers acking at once; NATS: stored in the JetStream stream). Stock: watermill-sql v3 subscriber + `components/forwarder`, defaults (batch 100, poll 1 s). Contender: `bus.Relay` (defaults: batch %d, poll 1 s, NOTIFY) over n lanes. The diagnostic row is stock Watermill reading the same outbox with a keyset SELECT (a row comparison on the primary key instead of watermill-sql's OR, `bus.KeysetSchema`, which `bus.Relay` now uses too). CPU is the bench process (which also hosts the embedded nats-server) and the PostgreSQL server, per event.\n\n", fmtCount(float64(c.Backlog)), bus.BatchSizeDefault)
		w("| sink | relay | events/s | **ratio to stock** | CPU µs/event bench | CPU µs/event PostgreSQL | others |\n")
		w("|---|---|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Relay {
			w("| %s | %s | %s | %s | %.0f | %.0f | %.0f%% |\n", row.Sink, row.Name(), fmtCounts(row.EPS), fmtRatio(row.Ratio), row.GoCPU, row.PGCPU, row.Other)
		}
		if r.chartName() != "" {
			w("\n![relay throughput against lanes](%s)\n", r.chartName())
		}
	}

	if len(r.Processes) > 0 {
		base := r.Processes[0].Processes
		w("\n## 2b. Relay processes\n\nThe same backlog of %s events in %d lanes drained by 1 or more relay processes under one consumer group, each a child process (this binary re-executed) running one `bus.Relay` (defaults, all lanes) with its own pgxpool, to a GoChannel in that process whose subscribers ack at once and count. A lane is relayed by one process at a time (the advisory lock claimed per batch); a process that finds a lane held waits a poll interval before it looks again. The processes connect first; a run is timed from telling them all to start until the last event was delivered in any of them (their own clocks, read from the shared system clock). Ratio = events/s ÷ events/s of %d process(es) in the same round. CPU per event: the relay processes together (from /proc while they run), PostgreSQL, and the bench process, which only asks the processes for their counts every %s. Duplicates: events delivered more than once in a run (the most in any round).\n\n", fmtCount(float64(c.Backlog)), procLanes, base, procPollInterval)
		w("| relay processes | events/s | **ratio to %d** | CPU µs/event relays | CPU µs/event PostgreSQL | CPU µs/event bench | duplicates | others |\n", base)
		w("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range r.Processes {
			w("| %d | %s | %s | %.0f | %.0f | %.0f | %d | %.0f%% |\n", p.Processes, fmtCounts(p.EPS), fmtRatio(p.Ratio), p.RelayCPU, p.PGCPU, p.BenchCPU, p.Duplicates, p.Other)
		}
	}

	if len(r.Latency) > 0 {
		w("\n## 3. End-to-end latency\n\nOne event per transaction on %d lanes, offered at a fixed rate (open loop) for %s by 4 producers; latency from just before COMMIT to the GoChannel subscriber receiving the event; `bus.Relay` defaults otherwise.\n\n", latencyLanes, c.LatencyTime)
		w("| wake-up | offered events/s | committed events/s | events | p50 ms | p99 ms | max ms | others |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, l := range r.Latency {
			w("| %s | %d | %.0f | %d | %.1f | %.1f | %.1f | %.0f%% |\n", l.Mode, l.Rate, l.Achieved, l.Events, l.P50, l.P99, l.Max, l.Other)
		}
	}

	if len(r.Memory) > 0 {
		w("\n## 4. Memory\n\nA child process (this binary re-executed) drains the backlog with 4 lanes to a publisher that only counts (a GoChannel would queue goroutines when the relay outpaces its subscriber, measuring the sink); peak RSS is its VmHWM from /proc/self/status (rusage maxrss would include the parent's RSS, inherited through the vfork-style clone before exec); idle RSS is after connecting, before relaying.\n\n")
		w("| relay | backlog | peak RSS MiB | idle RSS MiB | drain s | events/s |\n|---|---:|---:|---:|---:|---:|\n")
		for _, mm := range r.Memory {
			w("| %s | %s | %.1f | %.1f | %.1f | %s |\n", mm.Name(), fmtCount(float64(mm.Backlog)), mm.PeakRSS, mm.IdleRSS, mm.Seconds, fmtCount(mm.EPS))
		}
	}
	if len(r.Network) > 0 || len(r.NetSkipped) > 0 {
		w("\n## 5. Relay throughput over a network\n\nA backlog of %s events drained from the relay's start until the broker stored the last one, through a TCP proxy on loopback that delays every chunk of bytes by the one-way delay in each direction (at its arrival time plus the delay: latency without a throughput cap, order kept), to a broker in another process: nats-server with JetStream (file storage) and kfake (Kafka) as children of the bench, a private rabbitmq-server. Every relay publishes through the project's broker adapter (`broker.Open`: JetStream acks, AMQP publisher confirms on durable queues, Kafka acks=all), opened and warmed up (connected, topic created) before the clock starts. Stock: watermill-sql v3 subscriber + `components/forwarder`, defaults. Contender: `bus.Relay`, defaults, over n lanes. Ratio to stock of the same broker and delay in the same round. CPU per event: the bench (relays and proxy), PostgreSQL, the broker's processes. \"Proxy late\": how much later than due the proxy wrote the bytes, p50 / p99 over a run's chunks (medians over rounds).\n\n", fmtCount(float64(c.NetBacklog)))
		if len(r.Network) > 0 {
			w("| broker | one-way delay | relay | events/s | **ratio to stock** | CPU µs/event bench | PostgreSQL | broker | proxy late µs p50 / p99 | others |\n")
			w("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, row := range r.Network {
				w("| %s | %s | %s | %s | %s | %.0f | %.0f | %.0f | %.0f / %.0f | %.0f%% |\n", row.Broker, delayLabel(row.Delay), row.Name(), fmtCounts(row.EPS), fmtRatio(row.Ratio),
					row.GoCPU, row.PGCPU, row.BrokerCPU, row.LateP50, row.LateP99, row.Other)
			}
		}
		for _, s := range r.NetSkipped {
			w("\nNot measured: %s (%s).\n", s.Broker, s.Reason)
		}
	}

	if len(r.Status) > 0 {
		w("\n## 6. Status\n\nA %d-lane outbox filled through `bus.Outbox` (100 events per transaction, 4 producers), then `VACUUM ANALYZE` (the steady state autovacuum keeps; run here, it does not run during the measurement); a relay group's position set in every lane so that the last *backlog* rows are not acknowledged. Milliseconds per call: `observe.ReadStatus`, a Prometheus scrape of `observe.RegisterStatus` (registry Gather), and the statements of main's ReadStatus before issue 13 (counting every stored row); per round the median of %d calls (%d for before), then median and spread over the rounds. PostgreSQL CPU per call (ReadStatus / before), and the rows of the lane tables one call reads (sequentially or through an index, from pg_stat_xact_user_tables in a transaction without parallel workers): the work, whatever the machine's load. ReadStatus reads each lane's backlog and, in lane tables of at most 1 MiB, every row (it counts them). The backlog must come out exact (checked); stored rows above 1 MiB per lane table are the planner's estimate (~).\n\n", statusLanes, statusCalls, statusOldCalls)
		w("| stored rows | backlog | **ReadStatus ms** | scrape ms | before (every row counted) ms | PostgreSQL CPU ms/call: ReadStatus / before | lane rows read per call: ReadStatus / before | backlog read | stored shown |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Status {
			stored := fmtCount(float64(s.GotStored))
			if s.StoredEstimated {
				stored = "~" + stored
			}
			w("| %s | %s | %s | %s | %s | %.1f / %.1f | %s / %s | %s | %s |\n", fmtCount(float64(s.Stored)), fmtCount(float64(s.Backlog)),
				fmtSummary(s.ReadStatus, "%.1f"), fmtSummary(s.Scrape, "%.1f"), fmtSummary(s.Before, "%.0f"), s.PGCPU, s.BeforePGCPU,
				fmtCount(float64(s.RowsRead)), fmtCount(float64(s.BeforeRowsRead)), fmtCount(float64(s.GotBacklog)), stored)
		}
	}
	return b.String()
}

// outPaths returns the Markdown file and the chart file for -out.
func outPaths(out string) (md, png string) {
	if strings.HasSuffix(out, ".md") {
		dir := filepath.Dir(out)
		base := strings.TrimSuffix(filepath.Base(out), ".md")
		return out, filepath.Join(dir, base+"_relay_throughput.png")
	}
	return filepath.Join(out, "BENCH_RESULTS.md"), filepath.Join(out, "relay_throughput.png")
}

func (r *Results) chartName() string {
	if r.Config.Out == "" || len(r.Relay) == 0 {
		return ""
	}
	_, png := outPaths(r.Config.Out)
	return filepath.Base(png)
}

// Write writes the Markdown results and, with relay results, the chart.
func (r *Results) Write(out string) ([]string, error) {
	md, png := outPaths(out)
	if err := os.MkdirAll(filepath.Dir(md), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
		return nil, err
	}
	paths := []string{md}
	if len(r.Relay) > 0 {
		if err := r.chart(png); err != nil {
			return paths, fmt.Errorf("chart: %w", err)
		}
		paths = append(paths, png)
	}
	return paths, nil
}

// errXYs is a line of medians with min–max error bars.
type errXYs struct {
	plotter.XYs
	plotter.YErrors
}

var sinkColors = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255},
	color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255},
}

// chart draws relay throughput against lanes, one line per sink, with
// stock Watermill as a dashed horizontal line of the same color.
func (r *Results) chart(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Relay throughput, %s-event backlog (median, min–max over %d rounds)", fmtCount(float64(r.Config.Backlog)), r.Config.Rounds)
	p.X.Label.Text = "lanes"
	p.Y.Label.Text = "events/s"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(10)
	var ticks []plot.Tick
	maxLanes := 1
	for _, l := range r.Config.Lanes {
		ticks = append(ticks, plot.Tick{Value: float64(l), Label: fmt.Sprint(l)})
		maxLanes = max(maxLanes, l)
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = 0, float64(maxLanes)+0.5

	var sinks []string
	bySink := map[string][]RelayRow{}
	for _, row := range r.Relay {
		if _, ok := bySink[row.Sink]; !ok {
			sinks = append(sinks, row.Sink)
		}
		bySink[row.Sink] = append(bySink[row.Sink], row)
	}
	for i, sink := range sinks {
		col := sinkColors[i%len(sinkColors)]
		var pts errXYs
		for _, row := range bySink[sink] {
			if row.Lanes == lanesStockKeyset {
				continue
			}
			if row.Lanes == lanesStock {
				stock := plotter.XYs{{X: 0, Y: row.EPS.Median}, {X: float64(maxLanes) + 0.5, Y: row.EPS.Median}}
				l, err := plotter.NewLine(stock)
				if err != nil {
					return err
				}
				l.Color = col
				l.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
				p.Add(l)
				p.Legend.Add(sink+": stock Watermill", l)
				continue
			}
			pts.XYs = append(pts.XYs, plotter.XY{X: float64(row.Lanes), Y: row.EPS.Median})
			pts.YErrors = append(pts.YErrors, struct{ Low, High float64 }{row.EPS.Median - row.EPS.Min, row.EPS.Max - row.EPS.Median})
		}
		if len(pts.XYs) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(pts.XYs)
		if err != nil {
			return err
		}
		l.Color = col
		l.Width = vg.Points(2)
		s.Color = col
		s.Shape = draw.CircleGlyph{}
		eb, err := plotter.NewYErrorBars(pts)
		if err != nil {
			return err
		}
		eb.Color = col
		p.Add(l, s, eb)
		p.Legend.Add(sink+": bus.Relay", l, s)
	}
	// Headroom above the highest point for the legend.
	var top float64
	for _, row := range r.Relay {
		if row.Lanes != lanesStockKeyset {
			top = max(top, row.EPS.Max)
		}
	}
	p.Y.Max = top * 1.35
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}
