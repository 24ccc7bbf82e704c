package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/amqpbroker"
	_ "github.com/edupulse/eventbus/bus/broker/kafkabroker"
	_ "github.com/edupulse/eventbus/bus/broker/natsbroker"
	"github.com/edupulse/eventbus/gen"
)

// NetRow is one contender of the network comparison: one relay publishing
// to one out-of-process broker through the delay proxy at one delay.
type NetRow struct {
	Broker string
	// Delay is the proxy's one-way delay.
	Delay time.Duration
	// Lanes is lanesStock for stock Watermill, else bus.Relay's lanes.
	Lanes int
	// EPS is events/s from the relay's start until the broker stored the
	// last event.
	EPS Summary
	// Ratio is EPS / stock EPS of the same broker and delay, per round.
	Ratio Summary
	// GoCPU, PGCPU and BrokerCPU are CPU microseconds per event of this
	// process (the relay and the proxy), of PostgreSQL and of the broker's
	// processes (medians over the rounds).
	GoCPU, PGCPU, BrokerCPU float64
	// Other is the largest share of the machine's CPU that other processes
	// took during a run, in percent of one core.
	Other float64
	// LateP50 and LateP99 are how late the proxy wrote the bytes beyond
	// their due time (arrival + delay), in microseconds: percentiles over
	// the chunks of a run, medians over the rounds. Zero at delay 0.
	LateP50, LateP99 float64
}

// Name is the contender's label.
func (r NetRow) Name() string { return RelayRow{Lanes: r.Lanes}.Name() }

// NetSkip is a broker the network section could not run here.
type NetSkip struct {
	Broker, Reason string
}

// netPollInterval is how often a run asks the broker how many events it
// stored.
const netPollInterval = 5 * time.Millisecond

// runNetwork runs the network comparison: stock Watermill and bus.Relay
// with e.cfg.NetLanes lanes, each publishing through the delay proxy to
// each broker of e.cfg.NetBrokers, at each delay of e.cfg.NetDelays.
func (e *env) runNetwork(ctx context.Context) (rows []NetRow, skipped []NetSkip, err error) {
	n := e.cfg.NetBacklog
	topic := newAnswered(uuid.New()).EventName()
	var dbs []*relayDB
	defer func() {
		for _, d := range dbs {
			d.pool.Close()
		}
	}()
	stock, err := e.prepareStockDB(ctx, n, "net_stock")
	if err != nil {
		return nil, nil, err
	}
	dbs = append(dbs, stock)
	for _, lanes := range e.cfg.NetLanes {
		d, err := e.prepareOutboxDB(ctx, lanes, n, fmt.Sprintf("net_l%d", lanes))
		if err != nil {
			return nil, nil, err
		}
		dbs = append(dbs, d)
	}

	var brokers []netBroker
	defer func() {
		for _, b := range brokers {
			b.close()
		}
	}()
	for _, name := range e.cfg.NetBrokers {
		begin := time.Now()
		b, err := startNetBroker(ctx, name, topic)
		if errors.Is(err, errBrokerMissing) {
			e.log.logf("network: skipping %s: %v", name, err)
			skipped = append(skipped, NetSkip{Broker: name, Reason: err.Error()})
			continue
		}
		if err != nil {
			return nil, skipped, fmt.Errorf("start %s: %w", name, err)
		}
		e.log.logf("network: %s ready in %s, proxy %s", name, time.Since(begin).Round(time.Millisecond), b.proxy().addr())
		brokers = append(brokers, b)
	}

	type key struct {
		broker string
		delay  time.Duration
		lanes  int
	}
	eps := map[key][]float64{}
	ratio := map[key][]float64{}
	goCPU := map[key][]float64{}
	pgCPU := map[key][]float64{}
	brCPU := map[key][]float64{}
	lateP50 := map[key][]float64{}
	lateP99 := map[key][]float64{}
	other := map[key]float64{}
	for round := range e.cfg.Rounds {
		for _, b := range brokers {
			for _, delay := range e.cfg.NetDelays {
				b.proxy().setDelay(delay)
				order := append([]*relayDB(nil), dbs...)
				if round%2 == 1 {
					for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
						order[i], order[j] = order[j], order[i]
					}
				}
				got := map[int]float64{}
				for _, d := range order {
					s := &netSink{b: b, topic: topic, e: e}
					group := fmt.Sprintf("bench_net_%s_%s_%s_r%d", b.name(), delayLabel(delay), contenderLabel(d.lanes), round)
					var r drainResult
					var err error
					pprof.Do(ctx, pprof.Labels("section", sectionNetwork, "sink", b.name(), "delay", delayLabel(delay), "contender", contenderLabel(d.lanes)), func(ctx context.Context) {
						r, err = e.drain(ctx, d, s, group, n)
					})
					if err != nil {
						return nil, skipped, fmt.Errorf("round %d, %s, delay %s, %s: %w", round+1, b.name(), delay, RelayRow{Lanes: d.lanes}.Name(), err)
					}
					late := b.proxy().takeLateness()
					p50, p99 := latePercentiles(late)
					k := key{b.name(), delay, d.lanes}
					eps[k] = append(eps[k], r.eps)
					goCPU[k] = append(goCPU[k], r.goUS)
					pgCPU[k] = append(pgCPU[k], r.pgUS)
					brCPU[k] = append(brCPU[k], r.brokerUS)
					lateP50[k] = append(lateP50[k], p50)
					lateP99[k] = append(lateP99[k], p99)
					other[k] = max(other[k], r.otherPct)
					got[d.lanes] = r.eps
					e.log.logf("network round %d, %-8s %4s %-45s %8.0f events/s  (%.1fs; CPU/event: bench %.0fµs, postgres %.0fµs, broker %.0fµs; proxy late p50 %.0fµs p99 %.0fµs; others %.0f%%)",
						round+1, b.name(), delayLabel(delay), RelayRow{Lanes: d.lanes}.Name(), r.eps, r.elapsed.Seconds(), r.goUS, r.pgUS, r.brokerUS, p50, p99, r.otherPct)
				}
				for _, d := range dbs {
					k := key{b.name(), delay, d.lanes}
					ratio[k] = append(ratio[k], got[d.lanes]/got[lanesStock])
				}
			}
		}
	}
	for _, b := range brokers {
		for _, delay := range e.cfg.NetDelays {
			for _, d := range dbs {
				k := key{b.name(), delay, d.lanes}
				rows = append(rows, NetRow{Broker: b.name(), Delay: delay, Lanes: d.lanes,
					EPS: summarize(eps[k]), Ratio: summarize(ratio[k]),
					GoCPU: summarize(goCPU[k]).Median, PGCPU: summarize(pgCPU[k]).Median, BrokerCPU: summarize(brCPU[k]).Median,
					Other: other[k], LateP50: summarize(lateP50[k]).Median, LateP99: summarize(lateP99[k]).Median})
			}
		}
	}
	return rows, skipped, nil
}

// delayLabel is a delay as the tables and labels write it: "1ms", "0ms".
func delayLabel(d time.Duration) string {
	if d == 0 {
		return "0ms"
	}
	return d.String()
}

// latePercentiles returns the median and the 99th percentile of late, in
// microseconds.
func latePercentiles(late []time.Duration) (p50, p99 float64) {
	if len(late) == 0 {
		return 0, 0
	}
	us := make([]float64, len(late))
	for i, l := range late {
		us[i] = float64(l) / float64(time.Microsecond)
	}
	sort.Float64s(us)
	return percentile(us, 50), percentile(us, 99)
}

// netSink is one run's sink on a network broker: a broker.Broker opened
// through the proxy, its publisher warmed up (connected, the topic's
// stream, exchange or Kafka topic created) before the clock starts.
type netSink struct {
	b     netBroker
	topic string
	e     *env
}

func (s *netSink) name() string { return s.b.name() }
func (s *netSink) shutdown()    {}

// brokerCPU is the CPU time the broker's processes used so far.
func (s *netSink) brokerCPU() time.Duration { return processGroupCPU(s.b.pgid()) }

func (s *netSink) begin(ctx context.Context, n int) (sinkRun, error) {
	br, err := broker.Open(ctx, s.b.url(), broker.Options{Logger: s.e.logger})
	if err != nil {
		return sinkRun{}, err
	}
	warm, err := gen.Registry().NewMessage(ctx, newAnswered(uuid.New()))
	if err != nil {
		_ = br.Close()
		return sinkRun{}, err
	}
	if err := br.Publisher().Publish(s.topic, warm); err != nil {
		_ = br.Close()
		return sinkRun{}, fmt.Errorf("warm-up publish: %w", err)
	}
	if err := s.b.reset(ctx); err != nil {
		_ = br.Close()
		return sinkRun{}, fmt.Errorf("reset %s: %w", s.b.name(), err)
	}
	s.b.proxy().takeLateness()
	return sinkRun{
		pub: br.Publisher(),
		wait: func(ctx context.Context, failed <-chan error) error {
			t := time.NewTicker(netPollInterval)
			defer t.Stop()
			var last int64
			for {
				select {
				case err := <-failed:
					if err == nil {
						err = errors.New("stopped early")
					}
					return fmt.Errorf("relay: %w (%d of %d stored)", err, last, n)
				case <-ctx.Done():
					return fmt.Errorf("%w (%d of %d stored)", ctx.Err(), last, n)
				case <-t.C:
				}
				got, err := s.b.stored(ctx)
				if err != nil {
					return fmt.Errorf("count stored: %w", err)
				}
				last = got
				if got >= int64(n) {
					return nil
				}
			}
		},
		close: func() { _ = br.Close() },
	}, nil
}
