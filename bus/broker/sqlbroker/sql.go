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
package sqlbroker

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/edupulse/eventbus/bus/broker"
)

func init() {
	broker.Register("postgres", Open)
	broker.Register("postgresql", Open)
}

type sqlBroker struct {
	pool   *pgxpool.Pool
	db     *sql.DB
	pub    *wsql.Publisher
	logger watermill.LoggerAdapter

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
	return &sqlBroker{pool: pool, db: db, pub: pub, logger: logger}, nil
}

func (b *sqlBroker) Publisher() message.Publisher { return b.pub }

func (b *sqlBroker) Subscriber(group string) (message.Subscriber, error) {
	sub, err := broker.Track(&b.subs, func() (*wsql.Subscriber, error) {
		return wsql.NewSubscriber(b.db, wsql.SubscriberConfig{
			ConsumerGroup:    group,
			SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
			OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true,
		}, b.logger)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlbroker: subscriber: %w", err)
	}
	return sub, nil
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
