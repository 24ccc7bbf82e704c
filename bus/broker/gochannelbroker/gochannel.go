// Package gochannelbroker registers the "gochannel" broker scheme: Watermill's
// in-process GoChannel, for tests, examples and single-process
// applications.
//
// URL: gochannel://[?block=false&buffer=N]
//
// By default a publish blocks until every subscriber acknowledged the
// message (block=true), so the relay marks an event relayed only once the
// consumers handled it: nothing is lost when the process stops. There are
// no consumer groups: every subscriber of a topic gets every message, and a
// message published to a topic nobody subscribes to is dropped, so
// subscribe before starting the relay. Per-aggregate order is kept.
//
// There is no connection to lose, so broker.Options.ReconnectMax (and the
// reconnect_max URL parameter) have nothing to bound here.
//
// No error is permanent (bus.Permanent): GoChannel refuses no message for
// its size or contents, and its only error, a closed GoChannel, is not the
// message's fault.
//
// With block=true, a publish during which a subscription of the topic
// ended, or the broker closed, is an error (ErrNotKept): GoChannel drops a
// message sent to a subscriber that stops, and would report success.
//
// GoChannel keeps nothing: a message is in memory until its subscribers
// acknowledged it. So the publisher's PublishDurably (bus.DurablePublisher),
// with which a consumer without a Pool publishes its dead letters, returns
// nil only once a subscriber of the topic acknowledged the message, and an
// error (ErrNotKept) when nobody subscribes to the topic, as well as in the
// cases above, and always with block=false, where a publish does not wait
// for the subscribers. The consumer then nacks the message, which it
// handles again later; it does not acknowledge it, and with block=true
// neither does the relay its outbox row, so a process restarted with a
// dead-letter subscriber (or a Pool) dead-letters it then. Subscribe to the
// dead-letter topic before the relay starts: a GoChannel subscription waits
// for every publish in flight, and the publish of the message waits for
// its dead letter. Better, give consumers a Pool: their dead letters are
// then kept in PostgreSQL (the default with a Pool).
package gochannelbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// Scheme is the URL scheme this package registers.
const Scheme = "gochannel"

func init() { broker.Register(Scheme, Open) }

type goChannelBroker struct {
	gc     *gochannel.GoChannel
	block  bool
	closed atomic.Bool
	done   chan struct{} // closed by Close
	once   sync.Once

	mu   sync.Mutex
	subs map[string]int    // live subscriptions per topic
	ends map[string]uint64 // subscriptions ended per topic, ever
}

// Open is the gochannel driver.
func Open(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	q := u.Query()
	cfg := gochannel.Config{BlockPublishUntilSubscriberAck: true}
	if v := q.Get("block"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("gochannel: block=%q: %w", v, err)
		}
		cfg.BlockPublishUntilSubscriberAck = b
	}
	if v := q.Get("buffer"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("gochannel: buffer=%q: want a non-negative integer", v)
		}
		cfg.OutputChannelBuffer = n
	}
	return &goChannelBroker{
		gc: gochannel.NewGoChannel(cfg, watermill.NewSlogLogger(opts.Logger)), block: cfg.BlockPublishUntilSubscriberAck,
		subs: map[string]int{}, ends: map[string]uint64{}, done: make(chan struct{}),
	}, nil
}

func (b *goChannelBroker) Publisher() message.Publisher { return publisher{b} }

func (b *goChannelBroker) Subscriber(string) (message.Subscriber, error) { return subscriber{b}, nil }

func (b *goChannelBroker) Close() error {
	b.closed.Store(true)
	b.once.Do(func() { close(b.done) })
	return b.gc.Close()
}

// ErrNotKept is returned by PublishDurably when GoChannel cannot show that
// a subscriber acknowledged the message.
var ErrNotKept = errors.New("gochannel keeps no message: none was acknowledged by a subscriber of the topic (set ConsumerConfig.Pool to keep dead letters in PostgreSQL)")

// publisher is the GoChannel's publisher, with PublishDurably.
type publisher struct{ b *goChannelBroker }

// Publish implements message.Publisher. With block=true it returns nil
// only once every subscriber of the topic acknowledged the messages, or
// when the topic has none (the messages are then dropped). GoChannel
// itself would also return nil when a subscriber stopped, or the broker
// closed, before acknowledging them, having dropped them: that is an error
// here, so that the relay does not take an event for published because its
// consumer stopped.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs, false)
}

// PublishDurably implements bus.DurablePublisher: as Publish, and also an
// error (ErrNotKept) when nobody subscribes to the topic, or with
// block=false, where a publish does not wait for the subscribers.
func (p publisher) PublishDurably(topic string, msgs ...*message.Message) error {
	return p.b.publish(topic, msgs, true)
}

func (b *goChannelBroker) publish(topic string, msgs []*message.Message, durable bool) error {
	if durable && !b.block {
		return fmt.Errorf("gochannel: publish to %s with block=false, which does not wait for the subscribers: %w", topic, ErrNotKept)
	}
	b.mu.Lock()
	subs, ends := b.subs[topic], b.ends[topic]
	b.mu.Unlock()
	if durable && subs == 0 {
		return fmt.Errorf("gochannel: publish to %s: nobody subscribes to the topic: %w", topic, ErrNotKept)
	}
	if err := b.gc.Publish(topic, msgs...); err != nil {
		return err
	}
	if !b.block {
		return nil
	}
	b.mu.Lock()
	ended := b.ends[topic] != ends
	b.mu.Unlock()
	if ended || b.closed.Load() {
		return fmt.Errorf("gochannel: publish to %s: a subscription ended, or the broker closed, before the message was acknowledged: it may be lost: %w", topic, ErrNotKept)
	}
	return nil
}

func (publisher) Close() error { return nil }

var _ bus.DurablePublisher = publisher{}

// subscriber subscribes to the shared GoChannel, counting subscriptions for
// PublishDurably, and leaves the GoChannel open on Close (a consumer's
// router closes its subscriber).
type subscriber struct{ b *goChannelBroker }

// Subscribe implements message.Subscriber. A subscription counts for
// PublishDurably from after GoChannel added it until before GoChannel
// starts to stop it, so PublishDurably never takes a subscription GoChannel
// does not deliver to for a live one.
func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	b := s.b
	// GoChannel stops the subscription when its context ends: give it one
	// that ends only after the subscription is no longer counted.
	subCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := b.gc.Subscribe(subCtx, topic)
	if err != nil {
		cancel()
		return nil, err
	}
	b.mu.Lock()
	b.subs[topic]++
	b.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-b.done:
		}
		b.mu.Lock()
		b.subs[topic]--
		b.ends[topic]++
		b.mu.Unlock()
		cancel()
	}()
	return ch, nil
}

func (subscriber) Close() error { return nil }
