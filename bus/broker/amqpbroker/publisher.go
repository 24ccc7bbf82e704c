package amqpbroker

import (
	"errors"
	"fmt"
	"sync"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmTimeout bounds the wait for the broker's confirm of a message.
const confirmTimeout = 30 * time.Second

// publisher publishes with publisher confirms, on channels of its own over
// watermill-amqp's connection (which reconnects after a failure), in the
// layout watermill-amqp's subscriber reads. Unlike watermill-amqp's
// publisher, whose error is "delivery not confirmed" whatever happened, it
// reports why the broker closed the channel: a message above the broker's
// max_message_size, a write the user may not make. That is what tells a
// refusal from an outage.
type publisher struct {
	conn      *conn
	marshaler wamqp.Marshaler
	chans     chan *pubChannel // free channels, opened on first use
	done      chan struct{}    // closed by close

	mu         sync.Mutex
	declared   map[string]bool  // exchanges and retained queues declared on declaredOn
	declaredOn *amqp.Connection // the connection of declared
	queueArgs  amqp.Table       // of the retained queues
}

// pubChannel is a channel in confirm mode, and the error the broker closed
// it with.
type pubChannel struct {
	ch      *amqp.Channel
	closed  chan *amqp.Error
	reason  *amqp.Error
	returns chan amqp.Return // mandatory messages the broker could not route
}

func newPublisher(conn *conn, channels int, queueArgs amqp.Table) *publisher {
	p := &publisher{conn: conn, marshaler: marshaler{}, chans: make(chan *pubChannel, channels), done: make(chan struct{}), queueArgs: queueArgs}
	for range channels {
		p.chans <- &pubChannel{}
	}
	return p
}

// errPublisherClosed is returned by Publish once the broker is closed.
var errPublisherClosed = errors.New("publisher closed")

// errDeclare marks the failure to declare a topic's exchange.
var errDeclare = errors.New("declare exchange")

// Publish implements message.Publisher. It returns once the broker
// confirmed every message.
func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.withChannel(topic, func(pc *pubChannel) error {
		confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
		for _, msg := range msgs {
			dc, err := p.publish(pc, topic, msg, false)
			if err != nil {
				return err
			}
			confirms = append(confirms, dc)
		}
		timeout := time.NewTimer(confirmTimeout)
		defer timeout.Stop()
		for i, dc := range confirms {
			if err := p.confirmed(pc, topic, msgs[i], dc, timeout.C); err != nil {
				return err
			}
		}
		return nil
	})
}

// PublishDurably implements bus.DurablePublisher, for dead letters: a
// message published to a fanout exchange that no queue is bound to is
// confirmed by RabbitMQ and dropped. So it first declares the durable
// queue "RetainGroup:<topic>" bound to the topic's exchange, where the
// messages wait for a reader (Subscriber(RetainGroup)), and publishes each
// message with the mandatory flag: a message the broker could route to no
// queue (the queue deleted meanwhile) comes back, and is an error.
func (p *publisher) PublishDurably(topic string, msgs ...*message.Message) error {
	return p.withChannel(topic, func(pc *pubChannel) error {
		if err := p.declareRetained(pc, topic); err != nil {
			return err
		}
		for _, msg := range msgs { // one at a time: a return belongs to the last message
			pc.drainReturns()
			dc, err := p.publish(pc, topic, msg, true)
			if err != nil {
				return err
			}
			timeout := time.NewTimer(confirmTimeout)
			err = p.confirmed(pc, topic, msg, dc, timeout.C)
			timeout.Stop()
			if err != nil {
				return err
			}
			// The client hands a return over before the confirm that
			// follows it.
			select {
			case r, ok := <-pc.returns:
				if ok {
					p.forget(retainedKey(topic)) // declare the queue again next time
					return fmt.Errorf("message %s: %w: %d %s (no queue bound to the exchange)", msg.UUID, errReturned, r.ReplyCode, r.ReplyText)
				}
			default:
			}
		}
		return nil
	})
}

// errReturned: the broker returned a mandatory message it could not route.
var errReturned = errors.New("returned by the broker")

// withChannel runs fn with a free channel in confirm mode, open on the
// current connection, on which the topic's exchange is declared. A panic in
// the AMQP client meanwhile (a known class of bugs when a connection drops)
// is returned as a transient error, and the channel is not used again.
func (p *publisher) withChannel(topic string, fn func(pc *pubChannel) error) (err error) {
	var pc *pubChannel
	select {
	case <-p.done:
		return errPublisherClosed
	default:
	}
	select {
	case pc = <-p.chans:
	case <-p.done:
		return errPublisherClosed
	}
	defer func() { p.chans <- pc }()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
			if pc.ch != nil {
				_ = closeQuietly(pc.ch)
			}
			*pc = pubChannel{}
		}
	}()
	conn, _ := p.conn.current()
	if conn == nil {
		return errors.New("not connected to the broker")
	}
	if pc.ch == nil || pc.ch.IsClosed() {
		if err := pc.open(conn); err != nil {
			return err
		}
	}
	if err := p.declare(conn, pc, topic); err != nil {
		return err
	}
	return fn(pc)
}

// publish sends one message, mandatory or not, and returns its deferred
// confirm.
func (p *publisher) publish(pc *pubChannel, topic string, msg *message.Message, mandatory bool) (*amqp.DeferredConfirmation, error) {
	pub, err := p.marshaler.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("marshal message %s: %w", msg.UUID, err)
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(msg.Context(), topic, "", mandatory, false, pub)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", msg.UUID, pc.closeReason(err))
	}
	return dc, nil
}

// confirmed waits for a message's confirm until timeout and returns nil if
// the broker acked it.
func (p *publisher) confirmed(pc *pubChannel, topic string, msg *message.Message, dc *amqp.DeferredConfirmation, timeout <-chan time.Time) error {
	select {
	case <-dc.Done():
	case <-timeout:
		_ = pc.ch.Close() // confirms may come late on it: use another
		return fmt.Errorf("message %s: not confirmed within %v", msg.UUID, confirmTimeout)
	}
	if dc.Acked() {
		return nil
	}
	if pc.ch.IsClosed() {
		err := pc.closeReason(amqp.ErrClosed)
		if isCode(err, amqp.NotFound) {
			p.forget(topic) // the exchange was deleted: declare it again next time
		}
		return fmt.Errorf("message %s: %w", msg.UUID, err)
	}
	return fmt.Errorf("message %s: the broker refused it (basic.nack)", msg.UUID)
}

// declareRetained declares the durable queue that keeps the topic's
// messages published with PublishDurably, bound to its exchange, once per
// connection.
func (p *publisher) declareRetained(pc *pubChannel, topic string) error {
	key := retainedKey(topic)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.declared[key] {
		return nil
	}
	queue := QueueName(RetainGroup, topic)
	if _, err := pc.ch.QueueDeclare(queue, true, false, false, false, p.queueArgs); err != nil {
		return fmt.Errorf("%w: queue %s: %w", errDeclare, queue, pc.closeReason(err))
	}
	if err := pc.ch.QueueBind(queue, "", topic, false, nil); err != nil {
		return fmt.Errorf("%w: bind queue %s: %w", errDeclare, queue, pc.closeReason(err))
	}
	p.declared[key] = true
	return nil
}

// retainedKey is the key of a topic's retained queue in declared.
func retainedKey(topic string) string { return "queue " + topic }

// declare declares the topic's fanout exchange, once per connection.
func (p *publisher) declare(conn *amqp.Connection, pc *pubChannel, topic string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.declaredOn != conn {
		p.declaredOn, p.declared = conn, map[string]bool{}
	}
	if p.declared[topic] {
		return nil
	}
	if err := pc.ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w %s: %w", errDeclare, topic, pc.closeReason(err))
	}
	p.declared[topic] = true
	return nil
}

func (p *publisher) forget(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.declared, topic)
}

// Close implements message.Publisher: publishes waiting for a channel
// fail, and the broker closes the connection.
func (p *publisher) Close() error {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	return nil
}

func (pc *pubChannel) open(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("confirm mode: %w", err)
	}
	pc.ch, pc.closed, pc.reason = ch, ch.NotifyClose(make(chan *amqp.Error, 1)), nil
	// Buffered: the client blocks its reader on a full channel. Only
	// PublishDurably publishes mandatory messages, one at a time.
	pc.returns = ch.NotifyReturn(make(chan amqp.Return, 8))
	return nil
}

// drainReturns discards returns left from earlier publishes.
func (pc *pubChannel) drainReturns() {
	for {
		select {
		case <-pc.returns:
		default:
			return
		}
	}
}

// closeReason returns the error the broker closed the channel with, if it
// did, or else err. The client announces the reason before it fails the
// channel's calls and confirms.
func (pc *pubChannel) closeReason(err error) error {
	if pc.reason == nil {
		select {
		case e, ok := <-pc.closed:
			if ok && e != nil {
				pc.reason = e
			}
		default:
		}
	}
	if pc.reason != nil {
		return pc.reason
	}
	return err
}

// isCode reports whether err is an AMQP error with one of codes.
func isCode(err error, codes ...int) bool {
	var e *amqp.Error
	if !errors.As(err, &e) {
		return false
	}
	for _, c := range codes {
		if e.Code == c {
			return true
		}
	}
	return false
}

// permanent reports whether a publish error is one RabbitMQ returns for
// these messages however often they are sent (see the package doc): the
// broker closed the channel with 406 PRECONDITION_FAILED (a message above
// max_message_size), 311 CONTENT_TOO_LARGE or 403 ACCESS_REFUSED (the user
// may not write to the topic's exchange). For the exchange's declaration,
// only 403 is: a 406 there is an exchange of another type or arguments, a
// conflict for an operator to resolve, during which events wait.
func permanent(err error) bool {
	if errors.Is(err, errDeclare) {
		return isCode(err, amqp.AccessRefused)
	}
	return isCode(err, amqp.PreconditionFailed, amqp.ContentTooLarge, amqp.AccessRefused)
}

// closeQuietly closes ch, recovering from a panic the client may raise
// while doing so.
func closeQuietly(ch *amqp.Channel) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
		}
	}()
	return ch.Close()
}
