package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

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

// TopicFunc chooses the broker topic of an event.
type TopicFunc func(ev Event) string

// TopicByEventName routes every event to a topic named after its wire name,
// such as "edupulse.pulse.created". It is the default.
func TopicByEventName(ev Event) string { return ev.EventName() }

// TopicByAggregateType routes events to one topic per aggregate type,
// prefix + aggregate type, such as "edupulse.pulse".
func TopicByAggregateType(prefix string) TopicFunc {
	return func(ev Event) string { return prefix + ev.Envelope().AggregateType }
}

// SingleTopic routes every event to one topic.
func SingleTopic(topic string) TopicFunc {
	return func(Event) string { return topic }
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
	// Topic chooses each event's broker topic. Defaults to TopicByEventName.
	Topic TopicFunc
}

// Outbox writes events into the transactional outbox in the caller's
// transaction, so that they commit or roll back with the business rows.
// Rows use watermill-sql v3's PostgreSQL layout and Watermill's forwarder
// envelope: a Relay, or a stock Watermill forwarder reading a lane topic,
// publishes them. An Outbox is safe for concurrent use.
type Outbox struct {
	registry *Registry
	lanes    int
	topic    TopicFunc
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
	if cfg.Lanes == 0 {
		n, err := schema.Lanes(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("bus: outbox: %w", err)
		}
		cfg.Lanes = n
	}
	if cfg.Topic == nil {
		cfg.Topic = TopicByEventName
	}
	return &Outbox{registry: cfg.Registry, lanes: cfg.Lanes, topic: cfg.Topic}, nil
}

// Registry returns the registry the outbox encodes with.
func (o *Outbox) Registry() *Registry { return o.registry }

// Lanes returns the number of lanes.
func (o *Outbox) Lanes() int { return o.lanes }

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
// (events of one aggregate always share a lane). The W3C traceparent of
// ctx's span is stored with each event.
func (o *Outbox) Publish(ctx context.Context, tx Execer, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	type laneRows struct {
		lane int
		args []any // uuid, payload, metadata per row
	}
	var lanes []laneRows // usually one: a transaction's events often share an aggregate
	for _, ev := range events {
		msg, err := o.registry.NewMessage(ctx, ev)
		if err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		topic := o.topic(ev)
		if topic == "" {
			return fmt.Errorf("bus: publish %s %s: empty topic from the TopicFunc", ev.EventName(), msg.UUID)
		}
		// The row keeps the event's id and metadata, so that SQL can read
		// them without unwrapping; the forwarder reads only the payload.
		// The metadata is encoded once, for both.
		metadata, err := json.Marshal(msg.Metadata)
		if err != nil {
			return fmt.Errorf("bus: publish %s: metadata: %w", msg.UUID, err)
		}
		wrapped, err := wrapForForwarder(topic, msg.UUID, msg.Payload, metadata)
		if err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		lane := LaneOf(ev.Envelope().AggregateID, o.lanes)
		i := slices.IndexFunc(lanes, func(l laneRows) bool { return l.lane == lane })
		if i < 0 {
			lanes = append(lanes, laneRows{lane: lane})
			i = len(lanes) - 1
		}
		lanes[i].args = append(lanes[i].args, msg.UUID, wrapped, metadata)
	}
	for _, l := range lanes {
		rows := len(l.args) / 3
		if _, err := tx.Exec(ctx, o.inserts.get(l.lane, rows), l.args...); err != nil {
			return fmt.Errorf("bus: publish %d event(s) to lane %d: %w", rows, l.lane, err)
		}
	}
	return nil
}

// insertCache holds the INSERT statements of lanes and row counts: the
// statement watermill-sql v3's DefaultPostgreSQLSchema.InsertQuery builds
// (the tests check they are the same), built once.
type insertCache struct{ m sync.Map }

type insertKey struct{ lane, rows int }

func (c *insertCache) get(lane, rows int) string {
	k := insertKey{lane, rows}
	if q, ok := c.m.Load(k); ok {
		return q.(string)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `INSERT INTO "watermill_%s" (uuid, payload, metadata, transaction_id) VALUES `, schema.LaneTopic(lane))
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "($%d,$%d,$%d,pg_current_xact_id())", 3*i+1, 3*i+2, 3*i+3)
	}
	q := b.String()
	if rows <= maxCachedInsertRows {
		c.m.Store(k, q)
	}
	return q
}

// maxCachedInsertRows bounds the cache: larger INSERTs are built each time.
const maxCachedInsertRows = 64

// InTx runs fn in a new transaction on db, publishes the events fn returns
// in that same transaction and commits. If fn or the publish fails, the
// transaction is rolled back and the error returned.
func (o *Outbox) InTx(ctx context.Context, db TxBeginner, fn func(ctx context.Context, tx pgx.Tx) ([]Event, error)) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		events, err := fn(ctx, tx)
		if err != nil {
			return err
		}
		return o.Publish(ctx, tx, events...)
	})
}
