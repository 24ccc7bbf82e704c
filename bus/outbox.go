package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edupulse/eventbus/schema"
)

// Execer executes one statement. The caller's pgx.Tx is the usual one; a
// *pgxpool.Pool or *pgx.Conn also works, each statement then committing on
// its own.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// TxBeginner starts transactions: a *pgxpool.Pool or a *pgx.Conn.
type TxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// OutboxConfig configures an Outbox.
type OutboxConfig struct {
	// Registry knows the event types; usually the generated gen.Registry().
	// Required.
	Registry *Registry
	// Lanes is the number of outbox lanes. Zero reads it from the database,
	// where schema.Migrate recorded it; producers and relays must agree, so
	// leave it zero outside tests.
	Lanes int
	// Routing chooses each event's broker topic from its type. Pass the
	// same value to the consumers (ConsumerConfig.Routing), or give them
	// this Outbox. Defaults to routing by event name (RouteByEventName).
	Routing Routing
}

// Outbox writes events into the transactional outbox in the caller's
// transaction, so that they commit or roll back with the business rows.
// Rows use watermill-sql v3's PostgreSQL layout and Watermill's forwarder
// envelope: a Relay, or a stock Watermill forwarder reading a lane topic,
// publishes them. An Outbox is safe for concurrent use.
type Outbox struct {
	registry *Registry
	lanes    atomic.Int32 // refreshed when Migrate adds lanes
	lanesDB  schema.Querier
	routing  Routing
	topics   map[typeKey]string // the topic of each registered type, by routing
	inserts  insertCache
}

// NewOutbox returns an Outbox. db is used once, to read the number of lanes
// when cfg.Lanes is zero.
func NewOutbox(ctx context.Context, db schema.Querier, cfg OutboxConfig) (*Outbox, error) {
	if cfg.Registry == nil {
		return nil, errors.New("bus: outbox: nil Registry")
	}
	if cfg.Lanes < 0 || cfg.Lanes > schema.LanesMax {
		return nil, fmt.Errorf("bus: outbox: lanes %d out of range 1..%d", cfg.Lanes, schema.LanesMax)
	}
	// Route every type now: a type the routing cannot route is a
	// configuration error, not a failed Publish later.
	topics, err := cfg.Routing.table(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("bus: outbox: %w", err)
	}
	if cfg.Lanes == 0 {
		n, err := schema.Lanes(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("bus: outbox: %w", err)
		}
		cfg.Lanes = n
	}
	o := &Outbox{registry: cfg.Registry, lanesDB: db, routing: cfg.Routing, topics: topics}
	o.lanes.Store(int32(cfg.Lanes))
	return o, nil
}

// Registry returns the registry the outbox encodes with.
func (o *Outbox) Registry() *Registry { return o.registry }

// Lanes returns the number of lanes the outbox currently hashes over. It
// follows schema.Migrate adding lanes: the first Publish after the change
// fails with ErrLanesChanged (InTx retries it), and the outbox reads the
// new number.
func (o *Outbox) Lanes() int { return int(o.lanes.Load()) }

// LaneOf returns the lane of an aggregate id: a stable hash (FNV-1a) modulo
// the number of lanes, so that every event of one aggregate goes through
// one lane, in commit order.
func LaneOf(aggregateID string, lanes int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	return int(h.Sum32() % uint32(lanes))
}

// Publish writes events into the outbox using tx, normally the caller's
// transaction: they become visible to the relay when it commits, and
// vanish if it rolls back. Events of one lane go in one multi-row INSERT
// (events of one aggregate always share a lane), split to stay within
// PostgreSQL's 65,535 parameters per statement. The W3C traceparent of
// ctx's span is stored with each event.
//
// Relays deliver an aggregate's events in commit order. To that end
// Publish first locks the heads of the events' aggregates
// (eventbus_order_key, called by its first INSERT): while another open
// transaction has published events of one of them, Publish waits for it to
// end, and its rows are then placed after every committed event of those
// aggregates. Events of one lane take one statement; the INSERTs of
// several lanes go to the server in one round trip when tx can send a
// batch (pgx.Tx, *pgx.Conn, *pgxpool.Pool).
//
// When Publish returns an error the transaction must be rolled back: some
// of its rows may have been written. ErrLanesChanged, a deadlock or a
// serialization failure (see IsRetryable) go away when the transaction is
// run again, which InTx does.
func (o *Outbox) Publish(ctx context.Context, tx Execer, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	lanes := o.Lanes()
	type laneRows struct {
		lane int
		args []any // uuid, payload, metadata per row
	}
	var byLane []laneRows // usually one: a transaction's events often share an aggregate
	aggregates := make([]string, 0, 1)
	for _, ev := range events {
		// The row keeps the event's id and metadata, so that SQL can read
		// them without unwrapping; the forwarder reads only the payload.
		// The metadata is encoded once, for both. (An unregistered type
		// has no topic, and encodeRow refuses it.)
		row, err := o.registry.encodeRow(ctx, ev, o.topics[typeKey{ev.EventName(), ev.EventVersion()}])
		if err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		aggregate := ev.Envelope().AggregateID
		if len(aggregates) == 0 || aggregates[len(aggregates)-1] != aggregate {
			aggregates = append(aggregates, aggregate)
		}
		lane := LaneOf(aggregate, lanes)
		i := slices.IndexFunc(byLane, func(l laneRows) bool { return l.lane == lane })
		if i < 0 {
			byLane = append(byLane, laneRows{lane: lane})
			i = len(byLane) - 1
		}
		byLane[i].args = append(byLane[i].args, row.id, row.wrapped, row.metadata)
	}
	// Each aggregate once: sorted, as eventbus_order_key locks them
	// (a search of the list per event was quadratic in a bulk import's
	// aggregates).
	slices.Sort(aggregates)
	aggregates = slices.Compact(aggregates)
	// The first INSERT computes the order key in its first row (see
	// orderKeyCall); its other rows and every later INSERT read it back.
	// A Publish of one lane, the usual case, is then one statement.
	var stmts []statement
	for _, l := range byLane {
		for rest := l.args; len(rest) > 0; {
			first := len(stmts) == 0
			limit := maxInsertRows
			if first {
				limit = maxKeyedInsertRows
			}
			n := min(len(rest)/3, limit)
			args := rest[: 3*n : 3*n]
			rest = rest[3*n:]
			if first {
				args = append(args, aggregates, lanes)
			}
			stmts = append(stmts, statement{sql: o.inserts.get(l.lane, n, first), args: args, lane: l.lane, rows: n, orderKey: first})
		}
	}
	if err := execAll(ctx, tx, stmts); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == lanesChangedCode {
			if n, lerr := schema.Lanes(ctx, o.lanesDB); lerr == nil {
				o.lanes.Store(int32(n))
			}
			return fmt.Errorf("bus: publish %d event(s): %w (%s)", len(events), ErrLanesChanged, pgErr.Message)
		}
		return fmt.Errorf("bus: publish %d event(s): %w", len(events), err)
	}
	return nil
}

// lanesChangedCode is the SQLSTATE eventbus_order_key raises when the
// number of lanes changed.
const lanesChangedCode = "EB001"

// maxInsertRows is the most rows one INSERT writes: three parameters per
// row, and PostgreSQL's extended protocol allows 65,535 per statement.
const maxInsertRows = 65535 / 3

// maxKeyedInsertRows is the most rows the INSERT that computes the order
// key writes: it takes two parameters more.
const maxKeyedInsertRows = (65535 - 2) / 3

// statement is one INSERT of a Publish.
type statement struct {
	sql      string
	args     []any
	lane     int
	rows     int
	orderKey bool // its first row computes the order key
}

// batchSender is a pgx.Tx, *pgx.Conn or *pgxpool.Pool: the statements of
// a Publish then go to the server in one round trip.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// execAll runs stmts in order, in one round trip when tx can send a batch.
func execAll(ctx context.Context, tx Execer, stmts []statement) error {
	describe := func(st statement) string {
		if st.orderKey {
			return fmt.Sprintf("lock the aggregates' heads and insert %d row(s) into lane %d", st.rows, st.lane)
		}
		return fmt.Sprintf("insert %d row(s) into lane %d", st.rows, st.lane)
	}
	if bs, ok := tx.(batchSender); ok && len(stmts) > 1 {
		b := &pgx.Batch{}
		for _, st := range stmts {
			b.Queue(st.sql, st.args...)
		}
		res := bs.SendBatch(ctx, b)
		for _, st := range stmts {
			if _, err := res.Exec(); err != nil {
				_ = res.Close()
				return fmt.Errorf("%s: %w", describe(st), err)
			}
		}
		return res.Close()
	}
	for _, st := range stmts {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("%s: %w", describe(st), err)
		}
	}
	return nil
}

// insertCache holds the INSERT statements of lanes and row counts, built
// once: the statement watermill-sql v3's DefaultPostgreSQLSchema.InsertQuery
// builds, with the transaction's order key in place of
// pg_current_xact_id() as the rows' transaction_id (the tests check they
// differ in that only). With orderKey, the first row computes the key
// (orderKeyCall, from two parameters after the rows').
type insertCache struct{ m sync.Map }

type insertKey struct {
	lane, rows int
	orderKey   bool
}

func (c *insertCache) get(lane, rows int, orderKey bool) string {
	k := insertKey{lane, rows, orderKey}
	if q, ok := c.m.Load(k); ok {
		return q.(string)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `INSERT INTO "watermill_%s" (uuid, payload, metadata, transaction_id) VALUES `, schema.LaneTopic(lane))
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		key := orderKeyValue
		if orderKey && i == 0 {
			key = fmt.Sprintf(orderKeyCall, 3*rows+1, 3*rows+2)
		}
		fmt.Fprintf(&b, "($%d,$%d,$%d,%s)", 3*i+1, 3*i+2, 3*i+3, key)
	}
	q := b.String()
	if rows <= maxCachedInsertRows {
		c.m.Store(k, q)
	}
	return q
}

// orderKeyCall, in the first row of a Publish's first INSERT, locks the
// heads of the aggregates (the first parameter) and returns the
// transaction's order key, which it also sets for the rows after it; it
// fails with lanesChangedCode when the outbox no longer has as many lanes
// as the second parameter. PostgreSQL computes a VALUES list row by row,
// in order, so the key is set before any other row reads it. Computing it
// in the INSERT rather than in a statement of its own saves a statement
// and pgx's batch: 3-19% more transactions/s of a one-event Publish
// (pgbench, 2 cores, 6 of 6 alternating pairs).
const orderKeyCall = "eventbus_order_key($%d::text[],$%d)"

// orderKeyValue reads the order key eventbus_order_key set for the
// transaction.
const orderKeyValue = "current_setting('eventbus.order_key')::xid8"

// maxCachedInsertRows bounds the cache: larger INSERTs are built each time.
const maxCachedInsertRows = 64

// InTx runs fn in a new transaction on db, publishes the events fn returns
// in that same transaction and commits. If fn or the publish fails, the
// transaction is rolled back and the error returned.
//
// A transaction that fails for a reason that goes away when it runs again
// (see IsRetryable: a serialization failure or deadlock, ErrLanesChanged)
// is rolled back and run again, fn included, up to InTxAttempts times in
// all. fn must therefore do nothing outside the
// transaction that cannot be repeated.
//
// An error does not always mean that nothing was committed: when the
// connection drops while the server answers COMMIT, the transaction may
// have committed, its events included. InTx does not run the transaction
// again then (IsRetryable is false); a caller that does must first find
// out whether it committed, or make the operation idempotent with a key of
// its own, or it publishes a second set of events under new ids.
func (o *Outbox) InTx(ctx context.Context, db TxBeginner, fn func(ctx context.Context, tx pgx.Tx) ([]Event, error)) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			events, err := fn(ctx, tx)
			if err != nil {
				return err
			}
			return o.Publish(ctx, tx, events...)
		})
		if err == nil || !IsRetryable(err) || attempt == InTxAttempts {
			return err
		}
		// A short pause with jitter, so that transactions that collided do
		// not collide again at once.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond))))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// InTxAttempts is how many times InTx runs a transaction that keeps
// failing with a retryable error.
const InTxAttempts = 10
