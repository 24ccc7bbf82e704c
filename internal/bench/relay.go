package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/pprof"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// RelayRow is one contender of the relay throughput comparison on one sink.
type RelayRow struct {
	Sink string
	// Lanes is lanesStock for stock Watermill and lanesStockKeyset for the
	// diagnostic contender (stock with bus.KeysetSchema).
	Lanes int
	// EPS is events/s, from the relay's start until the last event was
	// delivered.
	EPS Summary
	// Ratio is EPS / stock EPS, per round (1 for stock).
	Ratio Summary
	// GoCPU and PGCPU are CPU microseconds per event of this process and of
	// PostgreSQL (medians over the rounds).
	GoCPU, PGCPU float64
	// Other is the largest share of the machine's CPU that other processes
	// took during a run, in percent of one core.
	Other float64
}

// Name is the contender's label.
func (r RelayRow) Name() string {
	switch r.Lanes {
	case lanesStock:
		return "stock Watermill (watermill-sql + forwarder)"
	case lanesStockKeyset:
		return "diagnostic: stock Watermill + keyset SELECT"
	}
	if r.Lanes == 1 {
		return "bus.Relay, 1 lane"
	}
	return fmt.Sprintf("bus.Relay, %d lanes", r.Lanes)
}

// contenderLabel is the pprof label value of a relay contender, for
// `go tool pprof -tagfocus contender=relay-4`.
func contenderLabel(lanes int) string {
	switch lanes {
	case lanesStock:
		return "stock"
	case lanesStockKeyset:
		return "stock-keyset"
	}
	return fmt.Sprintf("relay-%d", lanes)
}

// Pseudo lane counts of the stock contenders.
const (
	lanesStock       = 0
	lanesStockKeyset = -1
)

// stockForwarderTopic is the watermill-sql topic stock Watermill's outbox
// uses: the forwarder's default.
const stockForwarderTopic = "forwarder_topic"

// relayDB is one filled outbox: stock Watermill's (lanes 0) or ours.
type relayDB struct {
	lanes int
	pool  *pgxpool.Pool
	url   string
}

// runRelay runs the relay throughput comparison and then, on the same
// 4-lane backlog, the relay processes comparison.
func (e *env) runRelay(ctx context.Context) (rows []RelayRow, procRows []ProcessesRow, err error) {
	// One database per contender, each filled once with the same backlog;
	// every run reads it anew under a fresh consumer group (the relays never
	// delete rows here: the cleaner is off), so every run drains an identical,
	// equally warm backlog.
	var dbs []*relayDB
	defer func() {
		for _, d := range dbs {
			d.pool.Close()
		}
	}()
	stock, err := e.prepareStockDB(ctx, e.cfg.Backlog, "relay_stock")
	if err != nil {
		return nil, nil, err
	}
	dbs = append(dbs, stock)
	if e.cfg.Diagnostics {
		// The same outbox as stock, read with the keyset SELECT.
		dbs = append(dbs, &relayDB{lanes: lanesStockKeyset, pool: stock.pool, url: stock.url})
	}
	for _, lanes := range e.cfg.Lanes {
		d, err := e.prepareOutboxDB(ctx, lanes, e.cfg.Backlog, fmt.Sprintf("relay_l%d", lanes))
		if err != nil {
			return nil, nil, err
		}
		dbs = append(dbs, d)
	}

	var natsSrv *natsServer
	defer func() {
		if natsSrv != nil {
			natsSrv.shutdown()
		}
	}()
	var sinks []sink
	for _, name := range e.cfg.Sinks {
		s, err := newSink(ctx, name, &natsSrv)
		if err != nil {
			return nil, nil, fmt.Errorf("sink %s: %w", name, err)
		}
		defer s.shutdown()
		sinks = append(sinks, s)
	}

	type key struct {
		sink  string
		lanes int
	}
	eps := map[key][]float64{}
	ratio := map[key][]float64{}
	goCPU := map[key][]float64{}
	pgCPU := map[key][]float64{}
	other := map[key]float64{}
	for round := range e.cfg.Rounds {
		for _, s := range sinks {
			order := append([]*relayDB(nil), dbs...)
			if round%2 == 1 { // alternate: stock first, then last
				for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
					order[i], order[j] = order[j], order[i]
				}
			}
			got := map[int]float64{}
			for _, d := range order {
				group := fmt.Sprintf("bench_%s_%s_r%d", s.name(), contenderLabel(d.lanes), round)
				var r drainResult
				var err error
				pprof.Do(ctx, pprof.Labels("section", sectionRelay, "sink", s.name(), "contender", contenderLabel(d.lanes)), func(ctx context.Context) {
					r, err = e.drain(ctx, d, s, group, e.cfg.Backlog)
				})
				if err != nil {
					return nil, nil, fmt.Errorf("round %d, %s, lanes %d: %w", round+1, s.name(), d.lanes, err)
				}
				k := key{s.name(), d.lanes}
				eps[k] = append(eps[k], r.eps)
				goCPU[k] = append(goCPU[k], r.goUS)
				pgCPU[k] = append(pgCPU[k], r.pgUS)
				other[k] = max(other[k], r.otherPct)
				got[d.lanes] = r.eps
				e.log.logf("relay round %d, %-10s %-45s %8.0f events/s  (%.1fs; CPU/event: bench %.0fµs, postgres %.0fµs; others %.0f%%)",
					round+1, s.name(), RelayRow{Lanes: d.lanes}.Name(), r.eps, r.elapsed.Seconds(), r.goUS, r.pgUS, r.otherPct)
			}
			for _, d := range dbs {
				k := key{s.name(), d.lanes}
				ratio[k] = append(ratio[k], got[d.lanes]/got[0])
			}
		}
	}
	for _, s := range sinks {
		for _, d := range dbs {
			k := key{s.name(), d.lanes}
			rows = append(rows, RelayRow{Sink: s.name(), Lanes: d.lanes, EPS: summarize(eps[k]), Ratio: summarize(ratio[k]),
				GoCPU: summarize(goCPU[k]).Median, PGCPU: summarize(pgCPU[k]).Median, Other: other[k]})
		}
	}
	if len(e.cfg.Procs) == 0 {
		return rows, nil, nil
	}
	// The processes drain the 4-lane outbox of the comparison above, or
	// one filled for them.
	var d4 *relayDB
	for _, d := range dbs {
		if d.lanes == procLanes {
			d4 = d
		}
	}
	if d4 == nil {
		if d4, err = e.prepareOutboxDB(ctx, procLanes, e.cfg.Backlog, fmt.Sprintf("relay_procs_l%d", procLanes)); err != nil {
			return rows, nil, err
		}
		dbs = append(dbs, d4)
	}
	procRows, err = e.runProcesses(ctx, d4)
	return rows, procRows, err
}

type drainResult struct {
	eps        float64
	elapsed    time.Duration
	goUS, pgUS float64
	// brokerUS is the broker processes' CPU per event, for sinks in other
	// processes (brokerCPUer).
	brokerUS float64
	otherPct float64
}

// brokerCPUer is a sink whose broker runs in processes of its own: their
// CPU time so far.
type brokerCPUer interface {
	brokerCPU() time.Duration
}

// drain relays the backlog of d to s under a fresh consumer group and
// returns the throughput, timed from the relay's start until the last event
// arrived.
func (e *env) drain(ctx context.Context, d *relayDB, s sink, group string, n int) (drainResult, error) {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout(n))
	defer cancel()
	run, err := s.begin(ctx, n)
	if err != nil {
		return drainResult{}, err
	}
	defer run.close()

	bc, _ := s.(brokerCPUer)
	var brokerBefore time.Duration
	if bc != nil {
		brokerBefore = bc.brokerCPU()
	}
	before := takeCPU()
	begin := time.Now()
	stop, failed, err := startRelay(ctx, d, run.pub, group, e.logger)
	if err != nil {
		return drainResult{}, err
	}
	err = run.wait(ctx, failed)
	elapsed := time.Since(begin)
	used := takeCPU().sub(before)
	var brokerUsed time.Duration
	if bc != nil {
		brokerUsed = bc.brokerCPU() - brokerBefore
	}
	if stopErr := stop(); err == nil && stopErr != nil {
		err = fmt.Errorf("stop: %w", stopErr)
	}
	if err != nil {
		return drainResult{}, err
	}
	return drainResult{
		eps:      float64(n) / elapsed.Seconds(),
		elapsed:  elapsed,
		goUS:     float64(used.self.Microseconds()) / float64(n),
		pgUS:     float64(used.pg.Microseconds()) / float64(n),
		brokerUS: float64(brokerUsed.Microseconds()) / float64(n),
		otherPct: 100 * max(0, used.other()-brokerUsed).Seconds() / elapsed.Seconds(),
	}, nil
}

func drainTimeout(n int) time.Duration { return max(2*time.Minute, time.Duration(n/100)*time.Second) }

// startRelay starts stock Watermill (d.lanes == 0) or bus.Relay on d,
// publishing to pub under consumer group. stop ends it; failed yields Run's
// error if it returns early.
func startRelay(ctx context.Context, d *relayDB, pub message.Publisher, group string, logger *slog.Logger) (stop func() error, failed <-chan error, err error) {
	runCtx, cancel := context.WithCancel(ctx)
	// Run's result goes to done, for stop, and to early, for the waiter.
	done, early := make(chan error, 1), make(chan error, 1)
	report := func(err error) { done <- err; early <- err }
	if d.lanes <= 0 {
		fwd, sqlDB, err := newStockForwarder(d.pool, pub, group, d.lanes == lanesStockKeyset)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		go func() { report(fwd.Run(runCtx)) }()
		return func() error {
			cancel()
			err := fwd.Close()
			<-done
			_ = sqlDB.Close()
			return err
		}, early, nil
	}
	r, err := bus.NewRelay(bus.RelayConfig{
		Pool:            d.pool,
		Publisher:       pub,
		ConsumerGroup:   group,
		Retention:       -1, // keep the backlog for the next run
		ShutdownTimeout: 10 * time.Second,
		Logger:          logger,
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	go func() { report(r.Run(runCtx)) }()
	return func() error {
		cancel()
		return <-done
	}, early, nil
}

// newStockForwarder is stock Watermill's outbox relay with its defaults:
// a watermill-sql v3 subscriber (batch 100, poll 1 s, PostgreSQL schema and
// offsets adapters) over database/sql on the pool, and components/forwarder
// reading its default topic.
//
// With keyset, the subscriber reads with bus.KeysetSchema instead (a
// diagnostic, not stock).
func newStockForwarder(pool *pgxpool.Pool, pub message.Publisher, group string, keyset bool) (*forwarder.Forwarder, *sql.DB, error) {
	sqlDB := stdlib.OpenDBFromPool(pool)
	var schemaAdapter wsql.SchemaAdapter = wsql.DefaultPostgreSQLSchema{}
	if keyset {
		schemaAdapter = bus.KeysetSchema{}
	}
	sub, err := wsql.NewSubscriber(sqlDB, wsql.SubscriberConfig{
		ConsumerGroup:    group,
		SchemaAdapter:    schemaAdapter,
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, watermill.NopLogger{})
	if err != nil {
		_ = sqlDB.Close()
		return nil, nil, err
	}
	fwd, err := forwarder.NewForwarder(sub, pub, watermill.NopLogger{}, forwarder.Config{})
	if err != nil {
		_ = sqlDB.Close()
		return nil, nil, err
	}
	return fwd, sqlDB, nil
}

// backlogEvents returns n events over 1,000 aggregates, in batches of at
// most 100 for one transaction each.
func backlogEvents(n int) [][]bus.Event {
	aggs := make([]uuid.UUID, 1000)
	for i := range aggs {
		aggs[i] = uuid.New()
	}
	var batches [][]bus.Event
	for done := 0; done < n; {
		size := min(100, n-done)
		batch := make([]bus.Event, size)
		for i := range batch {
			batch[i] = newAnswered(aggs[rand.IntN(len(aggs))])
		}
		batches = append(batches, batch)
		done += size
	}
	return batches
}

// prepareOutboxDB creates a database with lanes lanes and fills its outbox
// with n events through bus.Outbox, from 4 producers.
func (e *env) prepareOutboxDB(ctx context.Context, lanes, n int, purpose string) (*relayDB, error) {
	pool, dbURL, err := e.newPool(ctx, purpose, int32(lanes+4))
	if err != nil {
		return nil, err
	}
	d := &relayDB{lanes: lanes, pool: pool, url: dbURL}
	if err := fillOutbox(ctx, pool, lanes, n); err != nil {
		pool.Close()
		return nil, err
	}
	e.log.logf("filled %s: %d events in %d lane(s)", purpose, n, lanes)
	return d, nil
}

func fillOutbox(ctx context.Context, pool *pgxpool.Pool, lanes, n int) error {
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: lanes}); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		return err
	}
	return fillConcurrently(ctx, backlogEvents(n), func(ctx context.Context, batch []bus.Event) error {
		return ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil })
	})
}

func fillConcurrently(ctx context.Context, batches [][]bus.Event, fn func(context.Context, []bus.Event) error) error {
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan []bus.Event)
	for range 4 {
		g.Go(func() error {
			for b := range next {
				if err := fn(gctx, b); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(next)
		for _, b := range batches {
			select {
			case next <- b:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// prepareStockDB creates a database and fills stock Watermill's outbox, the
// forwarder topic of watermill-sql v3's PostgreSQL schema, with the same
// events: forwarder.NewPublisher over the watermill-sql publisher, 100
// events per INSERT, from 4 producers.
func (e *env) prepareStockDB(ctx context.Context, n int, purpose string) (*relayDB, error) {
	pool, dbURL, err := e.newPool(ctx, purpose, 6)
	if err != nil {
		return nil, err
	}
	d := &relayDB{lanes: 0, pool: pool, url: dbURL}
	if err := fillStock(ctx, pool, n); err != nil {
		pool.Close()
		return nil, err
	}
	e.log.logf("filled %s: %d events in the forwarder topic", purpose, n)
	return d, nil
}

func fillStock(ctx context.Context, pool *pgxpool.Pool, n int) error {
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	sqlPub, err := wsql.NewPublisher(sqlDB, wsql.PublisherConfig{
		SchemaAdapter:        wsql.DefaultPostgreSQLSchema{},
		AutoInitializeSchema: true,
	}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: stockForwarderTopic})
	reg := gen.Registry()
	publish := func(ctx context.Context, batch []bus.Event) error {
		msgs := make([]*message.Message, len(batch))
		for i, ev := range batch {
			m, err := reg.NewMessage(ctx, ev)
			if err != nil {
				return err
			}
			msgs[i] = m
		}
		return pub.Publish(batch[0].EventName(), msgs...)
	}
	// The first batch alone: the publisher creates the table, and concurrent
	// first publishes would race on CREATE TABLE.
	batches := backlogEvents(n)
	if err := publish(ctx, batches[0]); err != nil {
		return err
	}
	return fillConcurrently(ctx, batches[1:], publish)
}
