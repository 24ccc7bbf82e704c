package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

const (
	// ackAttemptTimeout bounds one attempt to ack or nak a message: the
	// server answers at once, or not at all (JetStream not ready yet).
	ackAttemptTimeout = 2 * time.Second
	// ackRetryInitial and ackRetryMax bound the pause between two attempts
	// to ack or nak a message.
	ackRetryInitial = 50 * time.Millisecond
	ackRetryMax     = time.Second
)

// subscriber is a consumer group's subscriber: a connection of its own, and
// a JetStream push subscription per topic, bound to the group's durable
// consumer, which it creates first (topology.ensureConsumer).
//
// It replaces watermill-nats's subscriber, which logs and drops an ack
// that fails: after a server restart, acks fail ("no responders") until
// JetStream is back, and the messages whose acks were dropped hold the
// consumer's max_ack_pending slots until ack_wait expires, delivering
// nothing new meanwhile. This one retries a failed ack or nak (see
// settle).
type subscriber struct {
	conn    *nats.Conn
	js      nats.JetStreamContext
	topo    *topology
	group   string
	queue   string
	ackWait time.Duration
	logger  watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	subs    sync.WaitGroup // one per subscription, until its output is closed
}

func newSubscriber(conn *nats.Conn, topo *topology, group string, ackWait time.Duration, logger watermill.LoggerAdapter) (*subscriber, error) {
	js, err := conn.JetStream()
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &subscriber{
		conn: conn, js: js, topo: topo, group: group, queue: name(group), ackWait: ackWait, logger: logger,
		closing: make(chan struct{}),
	}, nil
}

// Subscribe implements message.Subscriber. The channel is closed when ctx
// ends or the subscriber closes.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("natsbroker: subscribe %s to %s: subscriber closed", s.group, topic)
	}
	if err := s.topo.ensureStream(topic); err != nil {
		return nil, fmt.Errorf("natsbroker: subscribe %s to %s: %w", s.group, topic, err)
	}
	if err := s.topo.ensureConsumer(s.group, s.queue, topic); err != nil {
		return nil, fmt.Errorf("natsbroker: subscribe %s to %s: %w", s.group, topic, err)
	}
	sub := &subscription{s: s, ctx: ctx, out: make(chan *message.Message),
		fields: watermill.LogFields{"topic": topic}}
	ns, err := s.js.QueueSubscribe(topic+".*", s.queue, sub.handle,
		nats.Bind(streamName(topic), consumerName(s.group, topic)), nats.ManualAck())
	if err != nil {
		return nil, fmt.Errorf("natsbroker: subscribe %s to %s: %w", s.group, topic, err)
	}
	s.subs.Add(1)
	go func() {
		defer s.subs.Done()
		select {
		case <-s.closing:
		case <-ctx.Done():
		}
		sub.stop(ns)
	}()
	return sub.out, nil
}

// Close stops the subscriptions (a message handed out and not acked yet is
// left to the server to deliver again after ack_wait) and closes the
// connection.
func (s *subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.subs.Wait()
	s.conn.Close()
	return nil
}

// subscription hands a subscription's messages out one at a time, each
// once the previous one was acked or nacked: the client calls handle for
// one message at a time. The acks and naks are sent concurrently.
type subscription struct {
	s      *subscriber
	ctx    context.Context
	out    chan *message.Message
	fields watermill.LogFields

	mu      sync.Mutex
	stopped bool
	active  sync.WaitGroup // calls of handle, and acks or naks being sent
}

// stop unsubscribes, waits for handle to return and the acks to be sent
// (or given up: the subscriber is closing) and closes the output.
func (sub *subscription) stop(ns *nats.Subscription) {
	sub.mu.Lock()
	sub.stopped = true
	sub.mu.Unlock()
	if err := ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		sub.s.logger.Error("Cannot unsubscribe", err, sub.fields)
	}
	sub.active.Wait()
	close(sub.out)
}

// done is closed when the subscription must stop handing out messages.
func (sub *subscription) done() (closing <-chan struct{}, ctxDone <-chan struct{}) {
	return sub.s.closing, sub.ctx.Done()
}

// handle is the subscription's message handler: it hands the message out,
// waits for its ack or nack for at most ack_wait (the server delivers it
// again after that), and settles it with the server.
func (sub *subscription) handle(m *nats.Msg) {
	sub.mu.Lock()
	if sub.stopped {
		sub.mu.Unlock()
		return
	}
	sub.active.Add(1)
	sub.mu.Unlock()
	defer sub.active.Done()

	msg, err := unmarshaler{}.Unmarshal(m)
	if err != nil { // unmarshaler never fails today; the server redelivers after ack_wait
		sub.s.logger.Error("Cannot unmarshal message", err, sub.fields)
		return
	}
	fields := sub.fields.Add(watermill.LogFields{"message_uuid": msg.UUID})
	ctx, cancel := context.WithCancel(sub.ctx)
	defer cancel()
	msg.SetContext(ctx)
	closing, ctxDone := sub.done()

	select {
	case sub.out <- msg:
	case <-closing:
		return
	case <-ctxDone:
		return
	}
	timeout := time.NewTimer(sub.s.ackWait)
	defer timeout.Stop()
	// The ack or nak is sent on its own goroutine, so that the next message
	// is handed out meanwhile: across a restart, the messages the client
	// holds are handled while their acks wait for the server.
	select {
	case <-msg.Acked():
		sub.active.Add(1)
		go sub.settle(m, "ack", fields, func(wait time.Duration) error { return m.AckSync(nats.AckWait(wait)) })
	case <-msg.Nacked():
		sub.active.Add(1)
		go sub.settle(m, "nak", fields, func(wait time.Duration) error { return m.Nak(nats.AckWait(wait)) })
	case <-timeout.C:
		sub.s.logger.Info("No ack within ack_wait: the server delivers the message again", fields)
	case <-closing:
	case <-ctxDone:
	}
}

// settle sends an ack or a nak, and waits for the server's answer, again
// and again until the server answers, for at most ack_wait, the
// subscription stops or the connection closes: an ack the server did not
// get holds one of the consumer's max_ack_pending slots until ack_wait
// expires, and once they are all held nothing new is delivered. Across a
// server restart, acks fail with "no responders" until JetStream is back,
// which is why they are retried; an ack the server got twice is harmless.
func (sub *subscription) settle(m *nats.Msg, what string, fields watermill.LogFields, send func(wait time.Duration) error) {
	defer sub.active.Done()
	closing, ctxDone := sub.done()
	deadline := time.Now().Add(sub.s.ackWait)
	pause := ackRetryInitial
	for attempt := 1; ; attempt++ {
		err := send(ackAttemptTimeout)
		if err == nil || errors.Is(err, nats.ErrMsgAlreadyAckd) {
			if attempt > 1 {
				sub.s.logger.Info("Message "+what+" sent after retrying", fields.Add(watermill.LogFields{"attempts": attempt}))
			}
			return
		}
		if errors.Is(err, nats.ErrConnectionClosed) || time.Now().Add(pause).After(deadline) {
			sub.s.logger.Error("Cannot send "+what+": the server delivers the message again after ack_wait", err, fields.Add(watermill.LogFields{"attempts": attempt}))
			return
		}
		if attempt == 1 {
			sub.s.logger.Debug("Cannot send "+what+", retrying", fields.Add(watermill.LogFields{"error": err.Error()}))
		}
		select {
		case <-time.After(pause):
		case <-closing:
			return
		case <-ctxDone:
			return
		}
		pause = min(2*pause, ackRetryMax)
	}
}
