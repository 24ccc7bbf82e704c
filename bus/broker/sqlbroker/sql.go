// Package sqlbroker registers the "postgres" and "postgresql" broker
// schemes: watermill-sql v3 itself as the broker, one table per topic
// (watermill_<topic>) in a PostgreSQL database.
//
// URL: a pgx connection URL, postgres://user:pass@host:5432/db?sslmode=disable
//
// Consumer groups are watermill-sql consumer groups: one consumer of a
// group reads a topic at a time, in commit order, so every consumer sees
// the order in which the relay published (per aggregate and overall).
// Tables are created on first use.
//
// Restarts and outages: the connection pool (pgxpool) opens new
// connections on demand, and a subscriber whose query failed queries again
// after watermill-sql's RetryInterval: 1 s, at most
// broker.Options.ReconnectMax (2 s by default; the reconnect_max URL
// parameter sets it). A subscriber's batch whose transaction the outage
// broke is read again: its messages are delivered again.
//
// Permanent errors (bus.Permanent: the relay dead-letters the event instead
// of retrying it for as long as it fails): a topic name watermill-sql does
// not accept, and the PostgreSQL errors about the row itself: SQLSTATE
// class 22, data exception (a payload or metadata that is not valid JSON,
// 22P02; a character the database's encoding cannot hold, 22P05; bytes
// that are not valid in it, 22021; a value too long, 22001), 23502 and
// 23514 (a NOT NULL or CHECK constraint added to the table refuses the
// row), 54000 (a value or row beyond PostgreSQL's limits) and 42501 (the
// user may not write to the topic's table). Everything else, connection
// failures, timeouts, serialization failures, a read-only standby, a full
// disk, is retried for as long as it lasts.
package sqlbroker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/edupulse/eventbus/bus/broker"
)

func init() {
	broker.Register("postgres", Open)
	broker.Register("postgresql", Open)
}

type sqlBroker struct {
	reconnectMax time.Duration // broker.Options.ReconnectMax

	pool   *pgxpool.Pool
	db     *sql.DB
	pub    *wsql.Publisher
	logger watermill.LoggerAdapter
	u      *url.URL

	subs broker.Subscribers
}

// Open is the postgres driver.
func Open(ctx context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("sqlbroker: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("sqlbroker: ping: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	logger := watermill.NewSlogLogger(opts.Logger)
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{
		SchemaAdapter:        wsql.DefaultPostgreSQLSchema{},
		AutoInitializeSchema: true,
	}, logger)
	if err != nil {
		db.Close()
		pool.Close()
		return nil, fmt.Errorf("sqlbroker: publisher: %w", err)
	}
	return &sqlBroker{reconnectMax: opts.ReconnectMax, pool: pool, db: db, pub: pub, logger: logger, u: u}, nil
}

func (b *sqlBroker) Publisher() message.Publisher {
	return broker.Publisher{Publisher: b.pub, Name: "sqlbroker", URL: b.u, Permanent: permanent}
}

// permanent reports whether a publish error is one PostgreSQL returns for
// these rows however often they are inserted (see the package doc).
func permanent(err error) bool {
	if errors.Is(err, wsql.ErrInvalidTopicName) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23502", // not_null_violation
		"23514", // check_violation
		"54000", // program_limit_exceeded
		"42501": // insufficient_privilege
		return true
	}
	return strings.HasPrefix(pgErr.Code, "22") // class 22, data exception
}

func (b *sqlBroker) Subscriber(group string) (message.Subscriber, error) {
	sub, err := broker.Track(&b.subs, func() (*wsql.Subscriber, error) {
		return wsql.NewSubscriber(b.db, wsql.SubscriberConfig{
			ConsumerGroup:    group,
			SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
			OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true,
			RetryInterval:    b.retryInterval(),
		}, b.logger)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlbroker: subscriber: %w", err)
	}
	return sub, nil
}

// retryInterval is watermill-sql's pause before querying again after an
// error: its default, 1 s, at most ReconnectMax.
func (b *sqlBroker) retryInterval() time.Duration {
	if b.reconnectMax > 0 {
		return min(time.Second, b.reconnectMax)
	}
	return time.Second
}

func (b *sqlBroker) Close() error {
	if already, _ := b.subs.Close(nil); already {
		return nil
	}
	err := b.pub.Close()
	_ = b.db.Close()
	b.pool.Close()
	return err
}
