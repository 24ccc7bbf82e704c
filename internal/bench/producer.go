package main

import (
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// Producer variants.
const (
	// prodRaw is the baseline: a raw pgx INSERT of rows of the same size
	// into a plain table of watermill-sql v3's PostgreSQL layout.
	prodRaw = "raw INSERT"
	// prodRawLane is a diagnostic: the same raw INSERT into the outbox lane
	// table of the row's aggregate (its NOTIFY trigger, its two extra
	// indexes, inheritance), to split the publish cost into the schema's
	// and the Go code's.
	prodRawLane = "raw INSERT into lane table"
	// prodPublish is the contender: bus.Outbox.Publish in a pgx transaction.
	prodPublish = "Outbox.Publish"
)

var producerVariants = []string{prodRaw, prodPublish, prodRawLane}

// ProducerRow is one producer case: events per transaction and concurrent
// producers, each variant's transactions/s over the rounds, and the cost
// ratios per round.
type ProducerRow struct {
	Events, Producers int
	// TPS holds transactions/s per variant.
	TPS map[string]Summary
	// CostRatio is publish cost / raw cost (raw tx/s / publish tx/s), per
	// round; LaneCostRatio the same for the raw INSERT into a lane table.
	CostRatio, LaneCostRatio Summary
	// GoCPU and PGCPU are the CPU microseconds per transaction of this
	// process and of PostgreSQL, per variant (medians).
	GoCPU, PGCPU map[string]float64
	// Other is the largest share of the machine's CPU taken by other
	// processes during a cell of this case, in percent of one core.
	Other float64
}

// variantLabel is the pprof label value of a producer variant.
func variantLabel(v string) string {
	switch v {
	case prodRaw:
		return "raw"
	case prodRawLane:
		return "raw-lane"
	}
	return "publish"
}

type producerCase struct{ events, producers int }

func (e *env) runProducer(ctx context.Context) ([]ProducerRow, error) {
	const lanes = schema.LanesDefault
	pool, _, err := e.newPool(ctx, "producer", 8)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: lanes}); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		return nil, err
	}
	p := &producerBench{ob: ob, pool: pool}
	if err := p.setup(ctx); err != nil {
		return nil, err
	}
	e.log.logf("producer: outbox row is %d bytes of payload and %d of metadata", len(p.payload), len(p.metadata))

	cases := []producerCase{{1, 1}, {10, 1}, {1, 4}, {10, 4}}
	type key struct {
		c       producerCase
		variant string
	}
	tps := map[key][]float64{}
	goCPU := map[key][]float64{}
	pgCPU := map[key][]float64{}
	other := map[producerCase]float64{}
	ratios := map[producerCase][]float64{}
	laneRatios := map[producerCase][]float64{}

	// Warm up: connections, prepared statements, the tables' first pages.
	for _, c := range cases {
		for _, v := range producerVariants {
			if _, err := p.cell(ctx, c, v, min(200*time.Millisecond, e.cfg.ProducerTime)); err != nil {
				return nil, fmt.Errorf("warm-up %s: %w", v, err)
			}
		}
	}
	for round := range e.cfg.Rounds {
		if err := p.truncate(ctx); err != nil {
			return nil, err
		}
		for _, c := range cases {
			order := producerVariants
			if round%2 == 1 {
				order = []string{prodRawLane, prodPublish, prodRaw}
			}
			got := map[string]float64{}
			for _, v := range order {
				var r cellResult
				var err error
				pprof.Do(ctx, pprof.Labels("section", sectionProducer, "contender", variantLabel(v), "events", fmt.Sprint(c.events), "producers", fmt.Sprint(c.producers)), func(ctx context.Context) {
					r, err = p.cell(ctx, c, v, e.cfg.ProducerTime)
				})
				if err != nil {
					return nil, fmt.Errorf("%s, %d events/tx, %d producers: %w", v, c.events, c.producers, err)
				}
				k := key{c, v}
				tps[k] = append(tps[k], r.tps)
				goCPU[k] = append(goCPU[k], r.goUS)
				pgCPU[k] = append(pgCPU[k], r.pgUS)
				other[c] = max(other[c], r.otherPct)
				got[v] = r.tps
			}
			ratios[c] = append(ratios[c], got[prodRaw]/got[prodPublish])
			laneRatios[c] = append(laneRatios[c], got[prodRaw]/got[prodRawLane])
			e.log.logf("producer round %d: %2d event(s)/tx, %d producer(s): raw %.0f tx/s, lane table %.0f tx/s, publish %.0f tx/s, cost ratio %.2f",
				round+1, c.events, c.producers, got[prodRaw], got[prodRawLane], got[prodPublish], got[prodRaw]/got[prodPublish])
		}
	}
	var rows []ProducerRow
	for _, c := range cases {
		row := ProducerRow{Events: c.events, Producers: c.producers, TPS: map[string]Summary{},
			GoCPU: map[string]float64{}, PGCPU: map[string]float64{}, Other: other[c],
			CostRatio: summarize(ratios[c]), LaneCostRatio: summarize(laneRatios[c])}
		for _, v := range producerVariants {
			k := key{c, v}
			row.TPS[v] = summarize(tps[k])
			row.GoCPU[v] = summarize(goCPU[k]).Median
			row.PGCPU[v] = summarize(pgCPU[k]).Median
		}
		rows = append(rows, row)
	}
	return rows, nil
}

type producerBench struct {
	ob                *bus.Outbox
	pool              *pgxpool.Pool
	payload, metadata []byte
	// aggs are precomputed aggregates for the raw variants: the template's
	// metadata with another aggregate id (same size), and its lane, so that
	// the lane tables' index on metadata->>'aggregate_id' and the spread over
	// lanes are those of Publish, at no Go cost during the cell.
	aggs    []rawAggregate
	rawSQL  map[int]string         // by rows per statement
	laneSQL map[int]map[int]string // by lane, then rows per statement
}

type rawAggregate struct {
	metadata []byte
	lane     int
}

// rawTable is the baseline table: watermill-sql v3's PostgreSQL layout, as
// DefaultPostgreSQLSchema creates it.
const rawTable = "bench_raw"

func (p *producerBench) setup(ctx context.Context) error {
	if _, err := p.pool.Exec(ctx, `CREATE TABLE `+rawTable+` (
		"offset" BIGSERIAL,
		"uuid" VARCHAR(36) NOT NULL,
		"created_at" TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
		"payload" JSON DEFAULT NULL,
		"metadata" JSON DEFAULT NULL,
		"transaction_id" xid8 NOT NULL,
		PRIMARY KEY ("transaction_id", "offset"))`); err != nil {
		return fmt.Errorf("create %s: %w", rawTable, err)
	}
	// The baseline writes the very bytes of an outbox row: publish one event
	// and read its row back.
	ev := newAnswered(uuid.New())
	if err := p.ob.InTx(ctx, p.pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
		return []bus.Event{ev}, nil
	}); err != nil {
		return fmt.Errorf("publish template event: %w", err)
	}
	var payload, metadata string
	if err := p.pool.QueryRow(ctx, `SELECT payload::text, metadata::text FROM eventbus_outbox WHERE uuid = $1`,
		ev.Envelope().ID.String()).Scan(&payload, &metadata); err != nil {
		return fmt.Errorf("read template row: %w", err)
	}
	p.payload, p.metadata = []byte(payload), []byte(metadata)
	aggID := ev.Envelope().AggregateID
	if !strings.Contains(metadata, aggID) {
		return fmt.Errorf("template metadata %s lacks the aggregate id %s", metadata, aggID)
	}
	for range 4096 {
		id := uuid.NewString()
		p.aggs = append(p.aggs, rawAggregate{
			metadata: []byte(strings.Replace(metadata, aggID, id, 1)),
			lane:     bus.LaneOf(id, p.ob.Lanes()),
		})
	}
	p.rawSQL = map[int]string{}
	p.laneSQL = map[int]map[int]string{}
	for lane := range p.ob.Lanes() {
		p.laneSQL[lane] = map[int]string{}
	}
	for _, n := range []int{1, 10} {
		p.rawSQL[n] = insertSQL(rawTable, n)
		for lane := range p.ob.Lanes() {
			p.laneSQL[lane][n] = insertSQL(`"watermill_`+schema.LaneTopic(lane)+`"`, n)
		}
	}
	return p.truncate(ctx)
}

// insertSQL is the statement watermill-sql v3's DefaultPostgreSQLSchema
// builds for n messages.
func insertSQL(table string, n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + table + ` (uuid, payload, metadata, transaction_id) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "($%d,$%d,$%d,pg_current_xact_id())", 3*i+1, 3*i+2, 3*i+3)
	}
	return b.String()
}

// truncate empties the tables the cells write, between rounds: the
// baseline's, the outbox, and the per-aggregate heads Publish records (one
// new row per transaction here, since every transaction publishes a new
// aggregate), so that every round starts from the same table sizes.
func (p *producerBench) truncate(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, `TRUNCATE `+rawTable+`, eventbus_outbox, eventbus_heads`)
	return err
}

type cellResult struct {
	tps        float64
	goUS, pgUS float64 // CPU µs per transaction
	otherPct   float64
}

// cell runs one variant of one case for d and returns its throughput.
func (p *producerBench) cell(ctx context.Context, c producerCase, variant string, d time.Duration) (cellResult, error) {
	conns := make([]*pgxpool.Conn, c.producers)
	for i := range conns {
		conn, err := p.pool.Acquire(ctx)
		if err != nil {
			return cellResult{}, err
		}
		defer conn.Release()
		conns[i] = conn
	}
	var count atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	var begin time.Time
	var deadline time.Time
	ready := make(chan struct{})
	for i := range c.producers {
		conn := conns[i]
		next := i * len(p.aggs) / c.producers
		g.Go(func() error {
			<-ready
			args := make([]any, 0, 3*c.events)
			events := make([]bus.Event, 0, c.events)
			for time.Now().Before(deadline) {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				tx, err := conn.Begin(gctx)
				if err != nil {
					return err
				}
				switch variant {
				case prodRaw, prodRawLane:
					// One aggregate per transaction, as for Publish.
					agg := p.aggs[next%len(p.aggs)]
					next++
					args = args[:0]
					for range c.events {
						args = append(args, uuid.NewString(), p.payload, agg.metadata)
					}
					q := p.rawSQL[c.events]
					if variant == prodRawLane {
						q = p.laneSQL[agg.lane][c.events]
					}
					_, err = tx.Exec(gctx, q, args...)
				case prodPublish:
					// One aggregate per transaction, as a command handler
					// writes the events of the aggregate it changed.
					events = events[:0]
					agg := uuid.New()
					for range c.events {
						events = append(events, newAnswered(agg))
					}
					err = p.ob.Publish(gctx, tx, events...)
				}
				if err != nil {
					_ = tx.Rollback(gctx)
					return err
				}
				if err := tx.Commit(gctx); err != nil {
					return err
				}
				count.Add(1)
			}
			return nil
		})
	}
	before := takeCPU()
	begin = time.Now()
	deadline = begin.Add(d)
	close(ready)
	err := g.Wait()
	elapsed := time.Since(begin)
	used := takeCPU().sub(before)
	if err != nil {
		return cellResult{}, err
	}
	n := float64(count.Load())
	r := cellResult{tps: n / elapsed.Seconds(), otherPct: 100 * used.other().Seconds() / elapsed.Seconds()}
	if n > 0 {
		r.goUS = float64(used.self.Microseconds()) / n
		r.pgUS = float64(used.pg.Microseconds()) / n
	}
	return r, nil
}

func newAnswered(pulse uuid.UUID) gen.PulseAnswered {
	return gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), time.Now().UTC().Truncate(time.Microsecond))
}
