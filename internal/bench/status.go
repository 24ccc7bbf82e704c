package main

import (
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// StatusRow is the cost of reading the status of one outbox at one backlog.
type StatusRow struct {
	// Stored is the number of rows in the outbox, Backlog the number the
	// group has not acknowledged.
	Stored, Backlog int
	// ReadStatus, Before and Scrape are milliseconds per call of
	// observe.ReadStatus, of the statements main's ReadStatus ran before
	// (counting every stored row), and of a Prometheus scrape of
	// observe.RegisterStatus (registry Gather): per round the median of
	// the calls, then summarized over the rounds.
	ReadStatus, Before, Scrape Summary
	// GotBacklog is the backlog ReadStatus reported (it must be Backlog:
	// it is exact), and GotStored the stored rows it reported, estimated
	// when StoredEstimated.
	GotBacklog, GotStored int64
	StoredEstimated       bool
	// PGCPU and BeforePGCPU are PostgreSQL's CPU milliseconds per call of
	// ReadStatus and of the statements before (medians over the rounds).
	PGCPU, BeforePGCPU float64
	// RowsRead and BeforeRowsRead are the rows of the lane tables one call
	// read, sequentially or through an index (pg_stat_xact_user_tables):
	// the work, whatever the machine's load.
	RowsRead, BeforeRowsRead int64
}

// Status section sizes.
const (
	statusLanes = 4
	// statusCalls is the number of timed calls of ReadStatus and of the
	// scrape per round and backlog; the old statements run statusOldCalls
	// times (they take most of a second each at 1M rows).
	statusCalls    = 9
	statusOldCalls = 3
	statusGroup    = "bench_status"
)

// runStatus fills a 4-lane outbox with e.cfg.StatusRows events and times
// ReadStatus at each backlog of e.cfg.StatusBacklogs.
func (e *env) runStatus(ctx context.Context) ([]StatusRow, error) {
	n := e.cfg.StatusRows
	d, err := e.prepareOutboxDB(ctx, statusLanes, n, "status")
	if err != nil {
		return nil, err
	}
	defer d.pool.Close()
	// The steady state of an outbox that big: autovacuum has analyzed it
	// (the planner's statistics, which the stored-row estimates come from)
	// and vacuumed it (its insert threshold). Done here, it does not run
	// during the measurement, taking PostgreSQL CPU and the machine.
	begin := time.Now()
	if _, err := d.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, fmt.Errorf("vacuum analyze: %w", err)
	}
	e.log.logf("status: VACUUM ANALYZE took %s", time.Since(begin).Round(time.Millisecond))
	reg := prometheus.NewRegistry()
	if err := observe.RegisterStatus(reg, d.pool, observe.StatusOptions{ConsumerGroup: statusGroup}); err != nil {
		return nil, err
	}

	type cell struct {
		newMS, oldMS, scrapeMS, pgMS, oldPGMS []float64
		got                                   observe.Status
		rowsRead, oldRowsRead                 int64
	}
	cells := make([]cell, len(e.cfg.StatusBacklogs))
	for round := range e.cfg.Rounds {
		for i, backlog := range e.cfg.StatusBacklogs {
			if err := setBacklog(ctx, d.pool, statusGroup, backlog); err != nil {
				return nil, fmt.Errorf("set a backlog of %d: %w", backlog, err)
			}
			c := &cells[i]
			if c.rowsRead, err = laneRowsRead(ctx, d.url, func(q dbtx) error {
				_, err := observe.ReadStatus(ctx, q, statusGroup)
				return err
			}); err != nil {
				return nil, err
			}
			if c.oldRowsRead, err = laneRowsRead(ctx, d.url, func(q dbtx) error { return readStatusBefore(ctx, q, statusGroup) }); err != nil {
				return nil, err
			}
			var newMS, oldMS, scrapeMS, pgMS, oldPGMS []float64
			timeNew := func() error {
				before := takeCPU()
				for range statusCalls {
					begin := time.Now()
					st, err := observe.ReadStatus(ctx, d.pool, statusGroup)
					if err != nil {
						return err
					}
					newMS = append(newMS, ms(time.Since(begin)))
					c.got = st
				}
				// PostgreSQL's CPU is read in clock ticks (10 ms): over all
				// the calls, not per call.
				pgMS = append(pgMS, ms(takeCPU().sub(before).pg)/statusCalls)
				for range statusCalls {
					begin := time.Now()
					if _, err := reg.Gather(); err != nil {
						return err
					}
					scrapeMS = append(scrapeMS, ms(time.Since(begin)))
				}
				return nil
			}
			timeOld := func() error {
				before := takeCPU()
				for range statusOldCalls {
					begin := time.Now()
					if err := readStatusBefore(ctx, d.pool, statusGroup); err != nil {
						return err
					}
					oldMS = append(oldMS, ms(time.Since(begin)))
				}
				oldPGMS = append(oldPGMS, ms(takeCPU().sub(before).pg)/statusOldCalls)
				return nil
			}
			steps := []func() error{timeNew, timeOld}
			if round%2 == 1 {
				steps[0], steps[1] = steps[1], steps[0]
			}
			pprof.Do(ctx, pprof.Labels("section", sectionStatus, "backlog", fmt.Sprint(backlog)), func(context.Context) {
				for _, step := range steps {
					if err = step(); err != nil {
						return
					}
				}
			})
			if err != nil {
				return nil, fmt.Errorf("round %d, backlog %d: %w", round+1, backlog, err)
			}
			nm, om, sm, pm, opm := summarize(newMS).Median, summarize(oldMS).Median, summarize(scrapeMS).Median, summarize(pgMS).Median, summarize(oldPGMS).Median
			c.newMS, c.oldMS, c.scrapeMS, c.pgMS, c.oldPGMS = append(c.newMS, nm), append(c.oldMS, om), append(c.scrapeMS, sm), append(c.pgMS, pm), append(c.oldPGMS, opm)
			e.log.logf("status round %d, %d stored, backlog %d: ReadStatus %.1f ms (PostgreSQL CPU %.1f ms, %d rows read), scrape %.1f ms, before %.1f ms (PostgreSQL CPU %.1f ms, %d rows read); backlog read %d",
				round+1, n, backlog, nm, pm, c.rowsRead, sm, om, opm, c.oldRowsRead, c.got.Backlog())
			if got := c.got.Backlog(); got != int64(backlog) {
				return nil, fmt.Errorf("round %d: ReadStatus reports a backlog of %d, want %d exactly (%s)", round+1, got, backlog, statusDiagnosis(ctx, d.pool, c.got))
			}
		}
	}
	rows := make([]StatusRow, len(cells))
	for i, c := range cells {
		var stored int64
		var estimated bool
		for _, l := range c.got.Lanes {
			stored += l.Stored
			estimated = estimated || l.StoredEstimated
		}
		rows[i] = StatusRow{Stored: n, Backlog: e.cfg.StatusBacklogs[i],
			ReadStatus: summarize(c.newMS), Before: summarize(c.oldMS), Scrape: summarize(c.scrapeMS),
			GotBacklog: c.got.Backlog(), GotStored: stored, StoredEstimated: estimated,
			PGCPU: summarize(c.pgMS).Median, BeforePGCPU: summarize(c.oldPGMS).Median, RowsRead: c.rowsRead, BeforeRowsRead: c.oldRowsRead}
	}
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// dbtx runs queries: a pool or a transaction.
type dbtx interface {
	db.DBTX
	observe.DB
}

// readStatusBefore runs the statements of main's ReadStatus before issue
// 13 (commit bd23225), which counted every stored row: the baseline.
func readStatusBefore(ctx context.Context, conn dbtx, group string) error {
	q := db.New()
	if _, err := schema.Lanes(ctx, conn); err != nil {
		return err
	}
	if _, err := q.LaneStatus(ctx, conn, group); err != nil {
		return err
	}
	if _, err := q.LaneRelayProgress(ctx, conn, group); err != nil {
		return err
	}
	if _, err := q.CountDeadLetters(ctx, conn); err != nil {
		return err
	}
	_, err := q.InboxByGroup(ctx, conn)
	return err
}

// laneRowsRead runs fn in a transaction without parallel workers and
// returns the rows of the lane tables it read, sequentially or through an
// index, from the transaction's own table statistics
// (pg_stat_xact_user_tables).
func laneRowsRead(ctx context.Context, dbURL string, fn func(dbtx) error) (int64, error) {
	// A connection of its own: no statement planned before (a cached
	// generic plan keeps the parallel workers of when it was planned).
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	// Parallel workers report the rows they read in their own statistics,
	// not in this transaction's: none, so that every row read counts.
	if _, err := tx.Exec(ctx, "SET LOCAL max_parallel_workers_per_gather = 0"); err != nil {
		return 0, err
	}
	read := func() (int64, error) {
		var n int64
		err := tx.QueryRow(ctx, `SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)::bigint
			FROM pg_stat_xact_user_tables WHERE starts_with(relname, $1)`, "watermill_"+schema.LaneTopicPrefix).Scan(&n)
		return n, err
	}
	before, err := read()
	if err != nil {
		return 0, err
	}
	if err := fn(tx); err != nil {
		return 0, err
	}
	after, err := read()
	return after - before, err
}

// setBacklog sets group's position in every lane so that exactly backlog
// rows of the outbox are above it: the last backlog rows in the order
// (transaction_id, offset), whatever their lanes.
func setBacklog(ctx context.Context, pool *pgxpool.Pool, group string, backlog int) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `DELETE FROM eventbus_offsets WHERE starts_with(consumer_group, $1 || '/')`, group); err != nil {
		return err
	}
	// The cut: the last row that is not in the backlog. (The text column
	// is named tx: named transaction_id, ORDER BY would sort the text.)
	var cutTx string
	var cutOff int64
	err = tx.QueryRow(ctx, `SELECT transaction_id::text AS tx, "offset" FROM eventbus_outbox
		ORDER BY transaction_id DESC, "offset" DESC OFFSET $1 LIMIT 1`, backlog).Scan(&cutTx, &cutOff)
	if err == pgx.ErrNoRows {
		return tx.Commit(ctx) // everything is backlog: no position
	}
	if err != nil {
		return err
	}
	for lane := range statusLanes {
		table := pgx.Identifier{"watermill_" + schema.LaneTopic(lane)}.Sanitize()
		if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id)
			SELECT $1, "offset", transaction_id FROM %s WHERE (transaction_id, "offset") <= ($2::xid8, $3::bigint)
			ORDER BY transaction_id DESC, "offset" DESC LIMIT 1`, table), fmt.Sprintf("%s/%d", group, lane), cutTx, cutOff); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// statusDiagnosis describes, for an error, the lanes ReadStatus read and
// what counting every row gives.
func statusDiagnosis(ctx context.Context, pool *pgxpool.Pool, st observe.Status) string {
	var b strings.Builder
	old, err := db.New().LaneStatus(ctx, pool, st.ConsumerGroup)
	fmt.Fprintf(&b, "ReadStatus lanes %+v; counting every row: %+v %v; positions:", st.Lanes, old, err)
	rows, err := pool.Query(ctx, `SELECT consumer_group, coalesce(offset_acked, -1), last_processed_transaction_id::text FROM eventbus_offsets ORDER BY 1`)
	if err != nil {
		return b.String() + " " + err.Error()
	}
	defer rows.Close()
	for rows.Next() {
		var g, tx string
		var off int64
		if rows.Scan(&g, &off, &tx) == nil {
			fmt.Fprintf(&b, " %s=(%s, %d)", g, tx, off)
		}
	}
	return b.String()
}
