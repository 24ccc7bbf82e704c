package observe

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// DB runs queries: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Status is a snapshot of the eventbus tables.
type Status struct {
	// ConsumerGroup is the relay consumer group the backlog is measured
	// against.
	ConsumerGroup string
	// Lanes holds every outbox lane, in order.
	Lanes []LaneStatus
	// DeadLetters counts the relay's dead letters not replayed.
	DeadLetters int64
	// ConsumerDeadLetters counts the consumers' dead letters stored in
	// PostgreSQL and not replayed.
	ConsumerDeadLetters int64
	// Inbox counts inbox rows per consumer group, ordered by group.
	Inbox []InboxStatus
}

// InboxRows returns the number of inbox rows of every consumer group.
func (s Status) InboxRows() int64 {
	var n int64
	for _, g := range s.Inbox {
		n += g.Rows
	}
	return n
}

// Backlog returns the number of events not yet relayed, in every lane.
func (s Status) Backlog() int64 {
	var n int64
	for _, l := range s.Lanes {
		n += l.Backlog
	}
	return n
}

// LaneStatus describes one outbox lane.
type LaneStatus struct {
	// Lane is the lane number.
	Lane int
	// Backlog counts the events the relay's consumer group has not
	// acknowledged. It is exact.
	Backlog int64
	// OldestPending is the age of the oldest of them, or zero.
	OldestPending time.Duration
	// Stored counts the rows in the lane table: the backlog plus the
	// relayed rows the relay's cleaner has not deleted yet. It is exact
	// when StoredEstimated is false, that is while the lane table takes at
	// most ExactCountMaxBytes; above that it is PostgreSQL's planner
	// estimate (as EXPLAIN shows it, from the statistics ANALYZE and
	// autovacuum keep: before a table's first ANALYZE it is a guess from
	// its size), never below Backlog.
	Stored int64
	// StoredEstimated tells that Stored is an estimate.
	StoredEstimated bool
	// RelayedOffset is the outbox offset the relay acknowledged last, or
	// zero if it never relayed the lane.
	RelayedOffset int64
	// LastRelayedAge is how long ago the event at RelayedOffset was
	// written to the outbox, or -1 when unknown (nothing relayed yet, or
	// the row was cleaned).
	LastRelayedAge time.Duration
}

// InboxStatus counts one consumer group's inbox rows.
type InboxStatus struct {
	ConsumerGroup string
	// Rows is exact when Estimated is false, that is while the inbox
	// table takes at most ExactCountMaxBytes; above that it is
	// PostgreSQL's planner estimate of the group's rows (at least 1).
	Rows int64
	// Estimated tells that Rows is an estimate.
	Estimated bool
}

// ExactCountMaxBytes is the largest table (lane table or inbox, its main
// fork) whose rows ReadStatus counts. Above it, counting would cost in
// proportion to the rows stored, so stored rows are the planner's
// estimate instead; the backlog is always counted, along the primary key
// from the relay's position, at a cost in proportion to the backlog.
const ExactCountMaxBytes = 1 << 20

// ReadStatus reads the status of the outbox lanes (against the relay
// consumer group group; empty means bus.ConsumerGroupDefault), the dead
// letters and the inbox. The error wraps schema.ErrNotMigrated when the
// eventbus schema is missing.
//
// Its cost grows with the backlog, not with the rows stored: each lane's
// backlog is counted along its primary key from the group's position, and
// the rows stored in a lane table or in the inbox larger than
// ExactCountMaxBytes are estimated (LaneStatus.StoredEstimated,
// InboxStatus.Estimated). Backlog, oldest pending age, relay progress and
// dead letters are exact.
//
// When conn can begin a transaction (a pool, a connection, or a
// transaction, in which it is a savepoint), the queries run in one that
// is rolled back at the end, with parallel query and JIT compilation off:
// starting parallel workers or compiling a plan costs more than counting a
// backlog of thousands of rows, and much more on a busy machine. It takes
// five round trips to the database from a pool or a connection, more only
// for an inbox above ExactCountMaxBytes (one per consumer group).
func ReadStatus(ctx context.Context, conn DB, group string) (Status, error) {
	return readStatusTx(ctx, conn, group, nil)
}

// txBeginner is a DB that begins transactions: *pgxpool.Pool, *pgx.Conn
// and pgx.Tx (a savepoint).
type txBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// txOptionsBeginner is a DB that begins transactions with options:
// *pgxpool.Pool and *pgx.Conn.
type txOptionsBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// statusSettings are the settings of ReadStatus's transaction: no parallel
// workers and no JIT compilation.
const statusSettings = "SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)"

// readStatusTx is ReadStatus; inTx, if set, runs in its transaction after
// the settings (for tests).
func readStatusTx(ctx context.Context, conn DB, group string, inTx func(DB) error) (Status, error) {
	var tx pgx.Tx
	var err error
	switch b := conn.(type) {
	case txOptionsBeginner: // a pool or a connection: BEGIN and the settings in one round trip
		tx, err = b.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; " + statusSettings})
	case txBeginner: // a transaction: a savepoint, then the settings
		if tx, err = b.Begin(ctx); err == nil {
			if _, err = tx.Exec(ctx, statusSettings); err != nil {
				_ = tx.Rollback(context.WithoutCancel(ctx))
			}
		}
	}
	if err != nil {
		return Status{}, fmt.Errorf("observe: read status: begin: %w", err)
	}
	if tx != nil {
		// Read only: nothing to keep, and the settings end with it.
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		conn = tx
	}
	if inTx != nil {
		if err := inTx(conn); err != nil {
			return Status{}, err
		}
	}
	return readStatus(ctx, conn, cmp.Or(group, bus.ConsumerGroupDefault))
}

// laneOverview returns, per lane 0..n-1 (n from eventbus_settings; no row
// when it holds none), where a relay consumer group stands (has_offsets is
// false when it never acknowledged a row of the lane), the lane table's
// size and the statistics the planner estimates its rows from; and,
// repeated on every row, the relay's and the consumers' dead letters not
// replayed and the size of the inbox: one round trip for what ReadStatus
// needs before it counts the backlogs. A NULL offset_acked reads as the largest offset in
// position_offset, so that (transaction_id, position_offset) compares like
// the NULL did when every row was counted: rows of that transaction count
// as acknowledged. (Raw SQL: sqlc does not know pg_class.)
const laneOverview = `SELECT
    l.lane::integer,
    f.consumer_group IS NOT NULL,
    coalesce(f.last_processed_transaction_id::text::bigint, 0)::bigint,
    coalesce(f.offset_acked, 9223372036854775807)::bigint,
    coalesce(f.offset_acked, 0)::bigint,
    coalesce(pg_relation_size(c.oid), 0)::bigint,
    (coalesce(pg_relation_size(c.oid), 0) / current_setting('block_size')::bigint)::bigint,
    coalesce(c.reltuples, -1)::float8,
    coalesce(c.relpages, 0)::bigint,
    (SELECT count(*) FROM eventbus_dead_letters d WHERE d.replayed_at IS NULL)::bigint,
    (SELECT count(*) FROM eventbus_consumer_dead_letters d WHERE d.replayed_at IS NULL)::bigint,
    pg_relation_size('eventbus_inbox')::bigint
FROM generate_series(0, (SELECT s.lanes FROM eventbus_settings s) - 1) AS l (lane)
LEFT JOIN pg_class c ON c.oid = to_regclass(format('watermill_eventbus_lane_%s', l.lane))
LEFT JOIN eventbus_offsets f ON f.consumer_group = $1::text || '/' || l.lane::text
ORDER BY l.lane`

// lanePosition is a row of laneOverview.
type lanePosition struct {
	lane                          int32
	hasOffsets                    bool
	transactionID, positionOffset int64
	offsetAcked                   int64
	sizeBytes, pages              int64
	reltuples                     float64
	relpages                      int64
}

func readStatus(ctx context.Context, conn DB, group string) (Status, error) {
	st := Status{ConsumerGroup: group}
	var positions []lanePosition
	var inboxSize int64
	rows, err := conn.Query(ctx, laneOverview, pgx.QueryExecModeExec, group)
	if err != nil {
		return Status{}, statusError(err)
	}
	for rows.Next() {
		var p lanePosition
		if err := rows.Scan(&p.lane, &p.hasOffsets, &p.transactionID, &p.positionOffset, &p.offsetAcked,
			&p.sizeBytes, &p.pages, &p.reltuples, &p.relpages, &st.DeadLetters, &st.ConsumerDeadLetters, &inboxSize); err != nil {
			rows.Close()
			return Status{}, statusError(err)
		}
		positions = append(positions, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Status{}, statusError(err)
	}
	if len(positions) == 0 {
		return Status{}, fmt.Errorf("observe: read status: %w", schema.ErrNotMigrated)
	}
	st.Lanes = make([]LaneStatus, len(positions))
	for i := range st.Lanes {
		st.Lanes[i] = LaneStatus{Lane: i, LastRelayedAge: -1}
	}
	if err := readBacklogs(ctx, conn, positions, st.Lanes); err != nil {
		return Status{}, fmt.Errorf("observe: read lane backlogs: %w", err)
	}
	if st.Inbox, err = readInbox(ctx, conn, inboxSize); err != nil {
		return Status{}, fmt.Errorf("observe: count inbox rows: %w", err)
	}
	return st, nil
}

// statusError wraps an error of laneOverview, as schema.ErrNotMigrated when
// the eventbus tables are missing.
func statusError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("observe: read status: %w", schema.ErrNotMigrated)
	}
	return fmt.Errorf("observe: read lane positions: %w", err)
}

// readBacklogs fills the backlog, oldest pending age, stored rows and
// relay progress of lanes, in one statement: per lane, an aggregate over
// the rows above the group's position, which PostgreSQL reads as a range
// of the lane table's primary key (transaction_id, "offset"); the age of
// the row last acknowledged (one index probe); and, for a lane table of at
// most ExactCountMaxBytes, the count of its rows. The positions are bound
// as parameters of an unnamed statement, so the planner sees their values
// (a generic plan, guessing a third of the rows, would scan the table).
// The rows of larger lane tables are then estimated (estimateLaneRows).
func readBacklogs(ctx context.Context, conn DB, positions []lanePosition, lanes []LaneStatus) error {
	var sql strings.Builder
	args := []any{pgx.QueryExecModeExec}
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args)-1)
	}
	for i, p := range positions {
		if i > 0 {
			sql.WriteString("\nUNION ALL\n")
		}
		table := pgx.Identifier{laneTable(int(p.lane))}.Sanitize()
		stored := "-1"
		if p.sizeBytes <= ExactCountMaxBytes {
			stored = "(SELECT count(*) FROM " + table + ")"
		}
		relayedAge, where := "-1", ""
		if p.hasOffsets {
			tx, off := param(p.transactionID), param(p.positionOffset)
			relayedAge = fmt.Sprintf(`coalesce((SELECT extract(epoch FROM now() - r.created_at) FROM %s r
    WHERE r.transaction_id = %s::bigint::text::xid8 AND r."offset" = %s::bigint), -1)`, table, tx, param(p.offsetAcked))
			where = fmt.Sprintf(` WHERE (transaction_id, "offset") > (%s::bigint::text::xid8, %s::bigint)`, tx, off)
		}
		fmt.Fprintf(&sql, "SELECT %d::integer, count(*)::bigint, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8, %s::bigint, %s::float8 FROM %s%s",
			p.lane, stored, relayedAge, table, where)
	}
	rows, err := conn.Query(ctx, sql.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var lane int32
		var backlog, stored int64
		var age, relayedAge float64
		if err := rows.Scan(&lane, &backlog, &age, &stored, &relayedAge); err != nil {
			return err
		}
		if int(lane) < 0 || int(lane) >= len(lanes) {
			continue
		}
		l := &lanes[lane]
		l.Backlog, l.OldestPending, l.Stored = backlog, seconds(age), stored
		if stored < 0 {
			l.StoredEstimated = true
		}
		if relayedAge >= 0 {
			l.LastRelayedAge = seconds(relayedAge)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var explain bool
	for i, p := range positions {
		l := &lanes[i]
		if p.hasOffsets {
			l.RelayedOffset = p.offsetAcked
		}
		if !l.StoredEstimated {
			continue
		}
		// The planner's estimate from the statistics of the last VACUUM or
		// ANALYZE (its estimate_rel_size): the density they measured times
		// the table's current pages.
		if p.reltuples >= 0 && p.relpages > 0 {
			l.Stored = max(int64(math.Round(p.reltuples/float64(p.relpages)*float64(p.pages))), l.Backlog)
		} else {
			explain = true // never analyzed: ask the planner
		}
	}
	if explain {
		return estimateLaneRows(ctx, conn, positions, lanes)
	}
	return nil
}

// laneTable is the table of a lane.
func laneTable(lane int) string { return "watermill_" + schema.LaneTopic(lane) }

// estimateLaneRows sets Stored of the estimated lanes whose table was never
// analyzed to the planner's guess of their rows: the rows it expects a
// scan of each lane table to return (EXPLAIN of a scan of eventbus_outbox,
// whose plan scans every lane table), never below the lane's backlog.
func estimateLaneRows(ctx context.Context, conn DB, positions []lanePosition, lanes []LaneStatus) error {
	est, err := explainRows(ctx, conn, "EXPLAIN (FORMAT JSON) SELECT 1 FROM eventbus_outbox")
	if err != nil {
		return err
	}
	for i, p := range positions {
		l := &lanes[i]
		if l.StoredEstimated && !(p.reltuples >= 0 && p.relpages > 0) {
			l.Stored = max(est[laneTable(l.Lane)], l.Backlog)
		}
	}
	return nil
}

// explainPlan is a node of EXPLAIN (FORMAT JSON)'s plan.
type explainPlan struct {
	RelationName string        `json:"Relation Name"`
	PlanRows     float64       `json:"Plan Rows"`
	Plans        []explainPlan `json:"Plans"`
}

// explainRows runs an EXPLAIN (FORMAT JSON) statement and returns the rows
// the plan expects from each table it scans, by table name; "" holds the
// rows of the top node.
func explainRows(ctx context.Context, conn DB, explain string, args ...any) (map[string]int64, error) {
	var out []byte
	if err := conn.QueryRow(ctx, explain, append([]any{pgx.QueryExecModeExec}, args...)...).Scan(&out); err != nil {
		return nil, err
	}
	var plans []struct {
		Plan explainPlan `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil {
		return nil, fmt.Errorf("read EXPLAIN output: %w", err)
	}
	if len(plans) == 0 {
		return nil, errors.New("EXPLAIN returned no plan")
	}
	rows := map[string]int64{"": int64(math.Round(plans[0].Plan.PlanRows))}
	var walk func(p explainPlan)
	walk = func(p explainPlan) {
		if p.RelationName != "" {
			rows[p.RelationName] += int64(math.Round(p.PlanRows))
		}
		for _, c := range p.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return rows, nil
}

// readInbox counts the inbox rows per consumer group, exactly while the
// inbox (of size bytes) is at most ExactCountMaxBytes, else as the
// planner's estimate for each group (found with one index descent per
// group).
func readInbox(ctx context.Context, conn DB, size int64) ([]InboxStatus, error) {
	q := db.New()
	var out []InboxStatus
	if size <= ExactCountMaxBytes {
		inbox, err := q.InboxByGroup(ctx, conn)
		if err != nil {
			return nil, err
		}
		for _, r := range inbox {
			out = append(out, InboxStatus{ConsumerGroup: r.ConsumerGroup, Rows: r.Rows})
		}
		return out, nil
	}
	groups, err := q.InboxGroups(ctx, conn)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		est, err := explainRows(ctx, conn, "EXPLAIN (FORMAT JSON) SELECT 1 FROM eventbus_inbox WHERE consumer_group = $1", g)
		if err != nil {
			return nil, err
		}
		out = append(out, InboxStatus{ConsumerGroup: g, Rows: max(est[""], 1), Estimated: true})
	}
	return out, nil
}

func seconds(s float64) time.Duration {
	return max(0, time.Duration(s*float64(time.Second)))
}

// StatusOptions configures RegisterStatus.
type StatusOptions struct {
	// ConsumerGroup is the relay consumer group whose backlog is measured.
	// Defaults to bus.ConsumerGroupDefault.
	ConsumerGroup string
	// Timeout bounds the queries of one scrape. Defaults to 5 seconds.
	Timeout time.Duration
	// OnError, if set, receives the error of a scrape whose queries
	// failed (eventbus_status_up is then 0).
	OnError func(error)
}

// StatusTimeoutDefault is StatusOptions.Timeout's default.
const StatusTimeoutDefault = 5 * time.Second

// statusCollector is the prometheus.Collector of RegisterStatus.
type statusCollector struct {
	db   DB
	opts StatusOptions
	mu   sync.Mutex // one scrape at a time queries the database

	backlog, oldest, rows, rowsEstimated, dead, consumerDead, inbox, inboxEstimated, up *prometheus.Desc
}

// RegisterStatus registers on reg a collector that reads the eventbus
// tables at every scrape (ReadStatus): the outbox backlog, oldest pending
// age and stored rows per lane, the dead-letter counts and the inbox rows
// per consumer group. Stored rows and inbox rows of tables larger than
// ExactCountMaxBytes are the planner's estimates, which
// eventbus_outbox_rows_estimated and eventbus_inbox_rows_estimated tell
// (1); a scrape costs in proportion to the backlog, not to the rows
// stored. When the queries fail, only eventbus_status_up (0) is reported,
// so that the scrape's other metrics still get through.
func RegisterStatus(reg prometheus.Registerer, conn DB, opts StatusOptions) error {
	if conn == nil {
		return errors.New("observe: RegisterStatus: nil DB")
	}
	opts.ConsumerGroup = cmp.Or(opts.ConsumerGroup, bus.ConsumerGroupDefault)
	opts.Timeout = cmp.Or(opts.Timeout, StatusTimeoutDefault)
	c := &statusCollector{
		db:   conn,
		opts: opts,
		backlog: prometheus.NewDesc("eventbus_outbox_backlog",
			"Events in the outbox lane not yet acknowledged by the relay's consumer group.", []string{"lane"}, nil),
		oldest: prometheus.NewDesc("eventbus_outbox_oldest_pending_age_seconds",
			"Age of the oldest event of the outbox lane not yet acknowledged by the relay, 0 when there is none.", []string{"lane"}, nil),
		rows: prometheus.NewDesc("eventbus_outbox_rows",
			"Rows stored in the outbox lane: the backlog plus relayed rows the relay's cleaner has not deleted yet. "+
				"Exact for lane tables up to 1 MiB, PostgreSQL's planner estimate above (see eventbus_outbox_rows_estimated).", []string{"lane"}, nil),
		rowsEstimated: prometheus.NewDesc("eventbus_outbox_rows_estimated",
			"1 if eventbus_outbox_rows of the lane is PostgreSQL's planner estimate (the lane table is above 1 MiB), 0 if it is exact.", []string{"lane"}, nil),
		dead: prometheus.NewDesc("eventbus_dead_letters",
			"Outbox events the relay dead-lettered and that were not replayed.", nil, nil),
		consumerDead: prometheus.NewDesc("eventbus_consumer_dead_letters",
			"Messages consumers dead-lettered to PostgreSQL and that were not replayed.", nil, nil),
		inbox: prometheus.NewDesc("eventbus_inbox_rows",
			"Rows in the inbox of idempotent consumers, per consumer group. "+
				"Exact for an inbox table up to 1 MiB, PostgreSQL's planner estimate above (see eventbus_inbox_rows_estimated).", []string{"consumer_group"}, nil),
		inboxEstimated: prometheus.NewDesc("eventbus_inbox_rows_estimated",
			"1 if eventbus_inbox_rows of the consumer group is PostgreSQL's planner estimate (the inbox table is above 1 MiB), 0 if it is exact.", []string{"consumer_group"}, nil),
		up: prometheus.NewDesc("eventbus_status_up",
			"1 if the eventbus status queries of this scrape succeeded, 0 if they failed.", nil, nil),
	}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("observe: register status collector: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.backlog, c.oldest, c.rows, c.rowsEstimated, c.dead, c.consumerDead, c.inbox, c.inboxEstimated, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	st, err := ReadStatus(ctx, c.db, c.opts.ConsumerGroup)
	if err != nil {
		if c.opts.OnError != nil {
			c.opts.OnError(err)
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, l := range st.Lanes {
		lane := strconv.Itoa(l.Lane)
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(l.Backlog), lane)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, l.OldestPending.Seconds(), lane)
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(l.Stored), lane)
		ch <- prometheus.MustNewConstMetric(c.rowsEstimated, prometheus.GaugeValue, boolGauge(l.StoredEstimated), lane)
	}
	ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(st.DeadLetters))
	ch <- prometheus.MustNewConstMetric(c.consumerDead, prometheus.GaugeValue, float64(st.ConsumerDeadLetters))
	for _, g := range st.Inbox {
		ch <- prometheus.MustNewConstMetric(c.inbox, prometheus.GaugeValue, float64(g.Rows), g.ConsumerGroup)
		ch <- prometheus.MustNewConstMetric(c.inboxEstimated, prometheus.GaugeValue, boolGauge(g.Estimated), g.ConsumerGroup)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
