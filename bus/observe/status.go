package observe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// DB runs queries: a *pgxpool.Pool or a *pgx.Conn.
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
	// acknowledged.
	Backlog int64
	// OldestPending is the age of the oldest of them, or zero.
	OldestPending time.Duration
	// Stored counts the rows in the lane table: the backlog plus the
	// relayed rows the relay's cleaner has not deleted yet.
	Stored int64
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
	Rows          int64
}

// ReadStatus reads the status of the outbox lanes (against the relay
// consumer group group; empty means bus.ConsumerGroupDefault), the dead
// letters and the inbox. The error wraps schema.ErrNotMigrated when the
// eventbus schema is missing.
func ReadStatus(ctx context.Context, conn DB, group string) (Status, error) {
	group = cmp.Or(group, bus.ConsumerGroupDefault)
	n, err := schema.Lanes(ctx, conn)
	if err != nil {
		return Status{}, fmt.Errorf("observe: read status: %w", err)
	}
	q := db.New()
	st := Status{ConsumerGroup: group, Lanes: make([]LaneStatus, n)}
	for i := range st.Lanes {
		st.Lanes[i] = LaneStatus{Lane: i, LastRelayedAge: -1}
	}
	lanes, err := q.LaneStatus(ctx, conn, group)
	if err != nil {
		return Status{}, fmt.Errorf("observe: read lane status: %w", err)
	}
	for _, r := range lanes {
		if int(r.Lane) < 0 || int(r.Lane) >= n {
			continue // a row inserted into the parent table by hand
		}
		l := &st.Lanes[r.Lane]
		l.Backlog, l.Stored = r.Backlog, r.Stored
		l.OldestPending = seconds(r.OldestPendingAgeSeconds)
	}
	progress, err := q.LaneRelayProgress(ctx, conn, group)
	if err != nil {
		return Status{}, fmt.Errorf("observe: read relay progress: %w", err)
	}
	for _, r := range progress {
		if int(r.Lane) < 0 || int(r.Lane) >= n {
			continue
		}
		l := &st.Lanes[r.Lane]
		l.RelayedOffset = r.OffsetAcked
		if r.LastRelayedAgeSeconds >= 0 {
			l.LastRelayedAge = seconds(r.LastRelayedAgeSeconds)
		}
	}
	if st.DeadLetters, err = q.CountDeadLetters(ctx, conn); err != nil {
		return Status{}, fmt.Errorf("observe: count dead letters: %w", err)
	}
	if st.ConsumerDeadLetters, err = q.CountConsumerDeadLetters(ctx, conn); err != nil {
		return Status{}, fmt.Errorf("observe: count consumer dead letters: %w", err)
	}
	inbox, err := q.InboxByGroup(ctx, conn)
	if err != nil {
		return Status{}, fmt.Errorf("observe: count inbox rows: %w", err)
	}
	for _, r := range inbox {
		st.Inbox = append(st.Inbox, InboxStatus{ConsumerGroup: r.ConsumerGroup, Rows: r.Rows})
	}
	return st, nil
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

	backlog, oldest, rows, dead, consumerDead, inbox, up *prometheus.Desc
}

// RegisterStatus registers on reg a collector that reads the eventbus
// tables at every scrape (ReadStatus): the outbox backlog, oldest pending
// age and stored rows per lane, the dead-letter counts and the inbox rows
// per consumer group. When the queries fail, only eventbus_status_up (0)
// is reported, so that the scrape's other metrics still get through.
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
			"Rows stored in the outbox lane: the backlog plus relayed rows the relay's cleaner has not deleted yet.", []string{"lane"}, nil),
		dead: prometheus.NewDesc("eventbus_dead_letters",
			"Outbox events the relay dead-lettered and that were not replayed.", nil, nil),
		consumerDead: prometheus.NewDesc("eventbus_consumer_dead_letters",
			"Messages consumers dead-lettered to PostgreSQL and that were not replayed.", nil, nil),
		inbox: prometheus.NewDesc("eventbus_inbox_rows",
			"Rows in the inbox of idempotent consumers, per consumer group.", []string{"consumer_group"}, nil),
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
	for _, d := range []*prometheus.Desc{c.backlog, c.oldest, c.rows, c.dead, c.consumerDead, c.inbox, c.up} {
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
	}
	ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(st.DeadLetters))
	ch <- prometheus.MustNewConstMetric(c.consumerDead, prometheus.GaugeValue, float64(st.ConsumerDeadLetters))
	for _, g := range st.Inbox {
		ch <- prometheus.MustNewConstMetric(c.inbox, prometheus.GaugeValue, float64(g.Rows), g.ConsumerGroup)
	}
}
