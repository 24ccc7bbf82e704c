package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
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
	schema   wsql.DefaultPostgreSQLSchema
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
	byLane := make(map[int]message.Messages, 1)
	order := make([]int, 0, 1)
	for _, ev := range events {
		msg, err := o.registry.NewMessage(ctx, ev)
		if err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		topic := o.topic(ev)
		if topic == "" {
			return fmt.Errorf("bus: publish %s %s: empty topic from the TopicFunc", ev.EventName(), msg.UUID)
		}
		wrapped, err := wrapForForwarder(topic, msg)
		if err != nil {
			return fmt.Errorf("bus: publish: %w", err)
		}
		// The row keeps the event's id and metadata, so that SQL can read
		// them without unwrapping; the forwarder reads only the payload.
		row := message.NewMessage(msg.UUID, wrapped)
		row.Metadata = msg.Metadata
		lane := LaneOf(ev.Envelope().AggregateID, o.lanes)
		if _, seen := byLane[lane]; !seen {
			order = append(order, lane)
		}
		byLane[lane] = append(byLane[lane], row)
	}
	for _, lane := range order {
		q, err := o.schema.InsertQuery(schema.LaneTopic(lane), byLane[lane])
		if err != nil {
			return fmt.Errorf("bus: publish: build insert for lane %d: %w", lane, err)
		}
		if _, err := tx.Exec(ctx, q.Query, q.Args...); err != nil {
			return fmt.Errorf("bus: publish %d event(s) to lane %d: %w", len(byLane[lane]), lane, err)
		}
	}
	return nil
}

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
