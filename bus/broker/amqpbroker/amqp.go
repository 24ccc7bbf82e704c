// Package amqpbroker registers the "amqp" and "amqps" broker schemes:
// RabbitMQ (AMQP 0-9-1), through watermill-amqp/v3.
//
// URL: amqp://user:password@host:5672/[vhost][?prefetch=1&channels=4&queue_type=classic]
// (amqps:// for TLS). Other query parameters are the AMQP client's own
// (heartbeat, connection_timeout, ...) and are passed to it.
//
// Query parameters:
//   - prefetch: unacknowledged messages the broker sends a consumer ahead
//     (default 1). Above 1, a message handed back by a stopping consumer
//     may be redelivered after later ones.
//   - channels: publisher channels kept open, in confirm mode (default 4);
//     concurrent publishes share them, each waiting for its own confirms.
//   - queue_type: classic (default) or quorum, for the queues this package
//     declares (quorum queues replicate across a cluster).
//
// Layout: each topic is a durable fanout exchange named after the topic.
// Each consumer group has a durable queue per topic, named
// "<group>:<topic>" and bound to the topic's exchange, declared when the
// group subscribes: every group gets every message, the subscribers of a
// group share its queue (each message goes to one of them). A message
// published to a topic no group subscribed to yet is dropped by the broker,
// as AMQP does with unroutable messages: subscribe (or declare the queues)
// before publishing. Messages are persistent.
//
// Publish returns once the broker confirmed every message (publisher
// confirms): a confirmed message is in the queues of every group bound at
// that time. Confirms are awaited asynchronously: a Publish holds a channel
// only while it sends, so concurrent publishes (the relay keeps many
// events in flight) share the channels and the broker's round trips.
//
// Dead letters: a consumer without a Pool publishes its dead letters with
// the publisher's PublishDurably (bus.DurablePublisher), which declares the
// durable queue "retained:<topic>" (RetainGroup) bound to the topic's
// exchange before it publishes, and publishes with the mandatory flag, so
// that a dead letter waits in that queue for a reader
// (Subscriber(RetainGroup)) and a message RabbitMQ could route nowhere is
// an error (the consumer then nacks the original and handles it again
// later) instead of being confirmed and dropped.
//
// Routing key: watermill-amqp computes one routing key per topic, not per
// message, so the aggregate id is not the routing key; it travels in the
// aggregate_id header. Exchanges are fanout and routing keys empty.
//
// Order: a queue is FIFO, so a group with one subscriber sees each topic's
// messages in publish order, and every aggregate's events in order (with
// prefetch=1, also after a redelivery). With several subscribers in a group,
// messages are spread over them regardless of the aggregate: per-aggregate
// order holds only per subscriber.
//
// Restarts and outages: the publisher and each subscriber keep a
// connection that reconnects, for as long as it takes, pausing from 100 ms
// doubling up to broker.Options.ReconnectMax (2 s by default; the
// reconnect_max URL parameter sets it) between attempts; a subscription
// consumes again, on a new channel, as soon as its connection is back, and
// declares its queue again. Messages handed out and not acked when the
// connection dropped are requeued by the broker and delivered again. This
// package does not use watermill-amqp's connection and subscriber: their
// reconnect backoff grows to 60 s (a consumer took 10.7 s to come back after
// a 25 s outage, 25 s after the restart test's first restart), cannot be
// set, and they replace the connection's fields on reconnect while other
// goroutines read them. A panic in the AMQP client while a subscription
// consumes is recovered: the subscription starts over on a new channel.
//
// Permanent errors (bus.Permanent: the relay dead-letters the event instead
// of retrying it for as long as it fails): the broker closing the
// publishing channel with 406 PRECONDITION_FAILED (a message above the
// server's max_message_size, 128 MiB by default), 311
// CONTENT_TOO_LARGE, or 403 ACCESS_REFUSED (the user may not write to the
// topic's exchange, or declare it). A 406 when declaring the exchange (one
// exists under the topic's name with another type or arguments) is not: it
// is for an operator to resolve, and the events wait meanwhile. Everything
// else, a lost connection, 404 (the exchange deleted: it is declared
// again), a negative confirm (basic.nack, the broker's internal trouble or
// a full queue rejecting publishes), a confirm timeout, is retried for as
// long as it lasts. The publisher keeps its own channels to tell these
// apart: watermill-amqp's reports "delivery not confirmed" for all of them.
package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/edupulse/eventbus/bus/broker"
)

// Schemes this package registers.
const (
	Scheme    = "amqp"
	SchemeTLS = "amqps"
)

// Defaults of the URL's query parameters.
const (
	PrefetchDefault = 1
	ChannelsDefault = 4
)

func init() {
	broker.Register(Scheme, Open)
	broker.Register(SchemeTLS, Open)
}

type config struct {
	uri          string // without our query parameters
	prefetch     int
	channels     int
	queueType    string
	reconnectMax time.Duration // broker.Options.ReconnectMax
}

func parseURL(u *url.URL) (config, error) {
	c := config{prefetch: PrefetchDefault, channels: ChannelsDefault, queueType: "classic"}
	q := u.Query()
	var err error
	if c.prefetch, err = positive(q, "prefetch", c.prefetch); err != nil {
		return c, err
	}
	if c.channels, err = positive(q, "channels", c.channels); err != nil {
		return c, err
	}
	if v := q.Get("queue_type"); v != "" {
		if v != "classic" && v != "quorum" {
			return c, fmt.Errorf("amqpbroker: queue_type=%q: want classic or quorum", v)
		}
		c.queueType = v
	}
	if u.Host == "" {
		return c, errors.New("amqpbroker: missing host (amqp://user:password@host:5672/)")
	}
	q.Del("prefetch")
	q.Del("channels")
	q.Del("queue_type")
	s := *u
	s.RawQuery = q.Encode()
	s.Fragment = ""
	c.uri = s.String()
	return c, nil
}

func positive(q url.Values, key string, def int) (int, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("amqpbroker: %s=%q: want a positive integer", key, v)
	}
	return n, nil
}

// marshaler is the marshaler of messages in and out.
func (c config) marshaler() marshaler { return marshaler{} }

// queueArgs are the arguments of the queues this package declares.
func (c config) queueArgs() amqp.Table {
	if c.queueType == "classic" {
		return nil
	}
	return amqp.Table{"x-queue-type": c.queueType}
}

// RetainGroup is the consumer group whose queue keeps the messages of a
// topic published with PublishDurably (bus.DurablePublisher): a consumer's
// dead letters. Read them with Subscriber(RetainGroup).
const RetainGroup = "retained"

// QueueName is the queue of a consumer group on a topic.
func QueueName(group, topic string) string { return group + ":" + topic }

type amqpBroker struct {
	cfg    config
	u      *url.URL
	logger watermill.LoggerAdapter
	conn   *conn // the publisher's
	pub    *publisher

	subs broker.Subscribers
}

// Open is the amqp driver.
func Open(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.reconnectMax = opts.ReconnectMax
	logger := watermill.NewSlogLogger(opts.Logger)
	conn, err := dial(cfg.uri, cfg.reconnectMax, logger)
	if err != nil {
		return nil, fmt.Errorf("amqpbroker: publisher: %s", broker.RedactError(err, u))
	}
	return &amqpBroker{cfg: cfg, u: u, logger: logger, conn: conn, pub: newPublisher(conn, cfg.channels, cfg.queueArgs())}, nil
}

func (b *amqpBroker) Publisher() message.Publisher {
	return broker.Publisher{Publisher: b.pub, Name: "amqpbroker", URL: b.u, Permanent: permanent}
}

func (b *amqpBroker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("amqpbroker: empty consumer group")
	}
	sub, err := broker.Track(&b.subs, func() (*subscriber, error) {
		return newSubscriber(b.cfg, group, b.logger.With(watermill.LogFields{"consumer_group": group}))
	})
	if err != nil {
		return nil, fmt.Errorf("amqpbroker: subscriber %s: %s", group, broker.RedactError(err, b.u))
	}
	return sub, nil
}

func (b *amqpBroker) Close() error {
	already, err := b.subs.Close(nil)
	if already {
		return nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("amqpbroker: close subscribers: %w", err))
	}
	_ = b.pub.Close()
	if err := b.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("amqpbroker: close publisher: %w", err))
	}
	return errors.Join(errs...)
}

// marshaler is watermill-amqp's, tolerant on the way in: a message from
// another producer, with headers that are not strings or without a message
// UUID, still reaches the consumer (which dead-letters what it cannot
// decode) instead of being requeued forever.
type marshaler struct{ wamqp.DefaultMarshaler }

func (m marshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	if msg, err := m.DefaultMarshaler.Unmarshal(d); err == nil {
		if msg.UUID == "" {
			msg.UUID = fallbackUUID(d)
		}
		return msg, nil
	}
	md := make(message.Metadata, len(d.Headers))
	id := ""
	for k, v := range d.Headers {
		s, ok := v.(string)
		if !ok {
			s = fmt.Sprint(v)
		}
		if k == wamqp.DefaultMessageUUIDHeaderKey {
			id = s
			continue
		}
		md[k] = s
	}
	if id == "" {
		id = fallbackUUID(d)
	}
	msg := message.NewMessage(id, d.Body)
	msg.Metadata = md
	return msg, nil
}

func fallbackUUID(d amqp.Delivery) string {
	if d.MessageId != "" {
		return d.MessageId
	}
	return watermill.NewUUID()
}
