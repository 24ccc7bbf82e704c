package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// LatencyRow is the commit-to-consumer latency of one wake-up mode at one
// offered load.
type LatencyRow struct {
	Mode string
	// Rate is the offered load and Achieved the load actually committed,
	// in events/s.
	Rate     int
	Achieved float64
	Events   int
	// P50, P99 and Max are in milliseconds.
	P50, P99, Max float64
	// Other is the share of the machine's CPU that other processes took
	// during the cell, in percent of one core.
	Other float64
}

type latencyMode struct {
	name          string
	disableNotify bool
	poll          time.Duration
}

// Mode names.
const (
	modeNotify  = "LISTEN/NOTIFY (poll 1 s)"
	modePoll1s  = "polling only, 1 s"
	modePoll100 = "polling only, 100 ms"
)

var latencyModes = []latencyMode{
	{modeNotify, false, time.Second},
	{modePoll100, true, 100 * time.Millisecond},
	{modePoll1s, true, time.Second},
}

const latencyLanes = schema.LanesDefault

func (e *env) runLatency(ctx context.Context) ([]LatencyRow, error) {
	const producers = 4
	pool, _, err := e.newPool(ctx, "latency", producers+latencyLanes+4)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: latencyLanes}); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		return nil, err
	}
	var rows []LatencyRow
	for _, rate := range e.cfg.LatencyRates {
		for _, m := range latencyModes {
			var row LatencyRow
			var err error
			pprof.Do(ctx, pprof.Labels("section", sectionLatency, "mode", m.name, "rate", fmt.Sprint(rate)), func(ctx context.Context) {
				row, err = e.latencyCell(ctx, pool, ob, m, rate, producers)
			})
			if err != nil {
				return rows, fmt.Errorf("%s at %d events/s: %w", m.name, rate, err)
			}
			e.log.logf("latency %-26s %5d events/s offered, %6.0f committed: p50 %7.1f ms, p99 %7.1f ms, max %7.1f ms (%d events; others %.0f%%)",
				m.name, rate, row.Achieved, row.P50, row.P99, row.Max, row.Events, row.Other)
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// receiver records when each event reached the consumer.
type receiver struct {
	mu   sync.Mutex
	at   map[string]time.Time
	more chan struct{}
}

func (e *env) latencyCell(ctx context.Context, pool *pgxpool.Pool, ob *bus.Outbox, m latencyMode, rate, producers int) (LatencyRow, error) {
	row := LatencyRow{Mode: m.name, Rate: rate}
	if _, err := pool.Exec(ctx, `TRUNCATE eventbus_outbox, eventbus_offsets`); err != nil {
		return row, err
	}
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	recv := &receiver{at: map[string]time.Time{}, more: make(chan struct{}, 1)}
	subCtx, cancelSub := context.WithCancel(ctx)
	defer cancelSub()
	for _, topic := range gen.Registry().Names() {
		ch, err := gc.Subscribe(subCtx, topic)
		if err != nil {
			return row, err
		}
		go func() {
			for msg := range ch {
				now := time.Now()
				msg.Ack()
				recv.mu.Lock()
				if _, dup := recv.at[msg.UUID]; !dup {
					recv.at[msg.UUID] = now
				}
				recv.mu.Unlock()
				select {
				case recv.more <- struct{}{}:
				default:
				}
			}
		}()
	}
	r, err := bus.NewRelay(bus.RelayConfig{
		Pool: pool, Publisher: gc, ConsumerGroup: "bench_latency",
		DisableNotify: m.disableNotify, PollInterval: m.poll,
		Retention: -1, ShutdownTimeout: 10 * time.Second, Logger: e.logger,
	})
	if err != nil {
		return row, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// Warm up: a short burst at the same rate, delivered before measuring.
	warm, err := offerLoad(ctx, pool, ob, rate, min(300*time.Millisecond, e.cfg.LatencyTime), producers)
	if err != nil {
		return row, fmt.Errorf("warm-up: %w", err)
	}
	if err := recv.waitFor(ctx, warm, m.poll+10*time.Second, done); err != nil {
		return row, fmt.Errorf("warm-up: %w", err)
	}

	before := takeCPU()
	sent, err := offerLoad(ctx, pool, ob, rate, e.cfg.LatencyTime, producers)
	if err != nil {
		return row, err
	}
	if err := recv.waitFor(ctx, sent, m.poll+10*time.Second, done); err != nil {
		return row, err
	}
	used := takeCPU().sub(before)
	lat := make([]float64, 0, len(sent))
	recv.mu.Lock()
	for id, t0 := range sent {
		lat = append(lat, float64(recv.at[id].Sub(t0).Microseconds())/1000)
	}
	recv.mu.Unlock()
	sort.Float64s(lat)
	row.Events = len(lat)
	row.Achieved = float64(len(sent)) / e.cfg.LatencyTime.Seconds()
	row.P50, row.P99, row.Max = percentile(lat, 50), percentile(lat, 99), lat[len(lat)-1]
	row.Other = 100 * used.other().Seconds() / used.elapsed.Seconds()
	return row, nil
}

// waitFor waits until every event of sent was received.
func (r *receiver) waitFor(ctx context.Context, sent map[string]time.Time, timeout time.Duration, relayDone <-chan error) error {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		missing := 0
		for id := range sent {
			if _, ok := r.at[id]; !ok {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-r.more:
		case <-time.After(20 * time.Millisecond):
		case err := <-relayDone:
			return fmt.Errorf("relay stopped: %v (%d of %d events missing)", err, missing, len(sent))
		case <-deadline:
			return fmt.Errorf("%d of %d events not delivered after %s", missing, len(sent), timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// offerLoad commits one event per transaction at rate events/s for d, from
// a schedule fixed in advance (an open loop: a slow commit does not slow
// the schedule down), on producers connections. It returns, per event id,
// the time just before its transaction's COMMIT was sent.
func offerLoad(ctx context.Context, pool *pgxpool.Pool, ob *bus.Outbox, rate int, d time.Duration, producers int) (map[string]time.Time, error) {
	period := time.Second / time.Duration(rate)
	total := int(d / period)
	aggs := make([]uuid.UUID, 1000)
	for i := range aggs {
		aggs[i] = uuid.New()
	}
	var mu sync.Mutex
	sent := make(map[string]time.Time, total)
	jobs := make(chan struct{}, total)
	g, gctx := errgroup.WithContext(ctx)
	for range producers {
		g.Go(func() error {
			conn, err := pool.Acquire(gctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			for range jobs {
				ev := newAnswered(aggs[rand.IntN(len(aggs))])
				t0, err := publishOne(gctx, conn.Conn(), ob, ev)
				if err != nil {
					return err
				}
				mu.Lock()
				sent[ev.Envelope().ID.String()] = t0
				mu.Unlock()
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		start := time.Now()
		for i := range total {
			if wait := time.Until(start.Add(time.Duration(i) * period)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			jobs <- struct{}{}
		}
		return nil
	})
	err := g.Wait()
	return sent, err
}

// publishOne commits ev in a transaction of its own on conn and returns the
// time just before the COMMIT that succeeded. A transaction that fails for
// a reason that goes away when it runs again (bus.IsRetryable: producers
// share aggregates here, and wait for each other's heads) is run again, as
// Outbox.InTx does, up to bus.InTxAttempts times.
func publishOne(ctx context.Context, conn *pgx.Conn, ob *bus.Outbox, ev bus.Event) (time.Time, error) {
	for attempt := 1; ; attempt++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return time.Time{}, err
		}
		err = ob.Publish(ctx, tx, ev)
		if err != nil {
			_ = tx.Rollback(ctx)
		} else {
			t0 := time.Now()
			if err = tx.Commit(ctx); err == nil {
				return t0, nil
			}
		}
		if !bus.IsRetryable(err) || attempt == bus.InTxAttempts {
			return time.Time{}, err
		}
	}
}
