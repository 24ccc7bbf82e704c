package amqpbroker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmTimeout bounds the wait for the broker's confirm of a message.
const confirmTimeout = 30 * time.Second

// publisher publishes with publisher confirms, on channels of its own over
// the broker's reconnecting connection (conn), in the layout watermill-amqp's
// subscriber reads. Unlike watermill-amqp's publisher, whose error is "delivery not confirmed" whatever happened, it
// reports why the broker closed the channel: a message above the broker's
// max_message_size, a write the user may not make. That is what tells a
// refusal from an outage.
//
// Confirms are asynchronous: a Publish holds its channel only while it
// sends, and then waits for its own confirms, so that concurrent calls
// share the channels and their round trips (the relay keeps many events in
// flight). When the broker closes a channel for a refusal, every publish
// with messages unconfirmed on it fails; a publish that shared the
// channel with others is then tried once more on a channel of its own, so
// that only the refused message is reported refused.
//
// PublishDurably (dead letters, rare) publishes on a channel of its own,
// held for the whole call, so that a returned message is known to be its
// own.
//
// A panic in the AMQP client while publishing (a known class of bugs when a
// connection drops) is returned as a transient error, and the channel is
// not used again.
type publisher struct {
	conn      *conn
	marshaler wamqp.Marshaler
	chans     []*pubChannel // opened on first use
	next      atomic.Uint64 // round robin over chans
	durable   pubChannel    // PublishDurably's, held for a whole call
	done      chan struct{} // closed by close

	mu         sync.Mutex
	declared   map[string]bool  // exchanges and retained queues declared on declaredOn
	declaredOn *amqp.Connection // the connection of declared
	queueArgs  amqp.Table       // of the retained queues
}

// pubChannel is a slot for a channel in confirm mode, reopened when it
// closed.
type pubChannel struct {
	mu    sync.Mutex // held while opening it and sending on it
	cur   *confirmChannel
	sends uint64 // publishes that sent on cur
	users int    // publishes waiting for confirms on cur
}

// confirmChannel is an open channel in confirm mode, and the error the
// broker closed it with.
type confirmChannel struct {
	ch      *amqp.Channel
	closed  chan *amqp.Error
	returns chan amqp.Return // mandatory messages the broker could not route

	mu     sync.Mutex
	reason *amqp.Error
}

func newPublisher(conn *conn, channels int, queueArgs amqp.Table) *publisher {
	p := &publisher{conn: conn, marshaler: marshaler{}, done: make(chan struct{}), queueArgs: queueArgs}
	for range channels {
		p.chans = append(p.chans, &pubChannel{})
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
	select {
	case <-p.done:
		return errPublisherClosed
	default:
	}
	pc := p.chans[p.next.Add(1)%uint64(len(p.chans))]
	shared, err := p.publishOn(pc, topic, msgs)
	if err != nil && shared && permanent(err) {
		// The channel was closed for a refusal while other publishes used
		// it: find out whether it was this one's.
		return p.publishAlone(topic, msgs)
	}
	return err
}

// publishOn sends msgs on pc's channel and waits for their confirms. shared
// reports whether other publishes had messages unconfirmed on the same
// channel meanwhile.
func (p *publisher) publishOn(pc *pubChannel, topic string, msgs []*message.Message) (shared bool, err error) {
	cc, confirms, sends, others, err := p.sendOn(pc, topic, msgs)
	if cc == nil {
		return false, err
	}
	defer func() {
		pc.mu.Lock()
		pc.users--
		shared = shared || others || pc.cur != cc || pc.sends != sends
		pc.mu.Unlock()
	}()
	if err != nil {
		return false, err
	}
	defer recoverPanic(&err, cc)
	return false, p.await(cc, topic, msgs, confirms)
}

// sendOn sends msgs on pc's channel, opened if needed, holding pc.mu. cc
// is nil when nothing was sent; otherwise the caller is one of pc's users
// and must leave. sends numbers this send on cc; others reports whether
// other publishes were waiting for confirms on cc.
func (p *publisher) sendOn(pc *pubChannel, topic string, msgs []*message.Message) (cc *confirmChannel, confirms []*amqp.DeferredConfirmation, sends uint64, others bool, err error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
			if pc.cur != nil {
				_ = closeQuietly(pc.cur.ch)
				pc.cur = nil // a new channel next time
			}
		}
	}()
	c, err := p.ready(pc, topic)
	if err != nil {
		return nil, nil, 0, false, err
	}
	pc.sends++
	pc.users++
	sends, others = pc.sends, pc.users > 1
	cc = c
	confirms, err = p.send(cc, topic, msgs, false)
	return cc, confirms, sends, others, err
}

// PublishDurably implements bus.DurablePublisher, for dead letters: a
// message published to a fanout exchange that no queue is bound to is
// confirmed by RabbitMQ and dropped. So it first declares the durable
// queue "RetainGroup:<topic>" bound to the topic's exchange, where the
// messages wait for a reader (Subscriber(RetainGroup)), and publishes each
// message with the mandatory flag: a message the broker could route to no
// queue (the queue deleted meanwhile) comes back, and is an error.
func (p *publisher) PublishDurably(topic string, msgs ...*message.Message) (err error) {
	select {
	case <-p.done:
		return errPublisherClosed
	default:
	}
	pc := &p.durable
	pc.mu.Lock()
	defer pc.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
			if pc.cur != nil {
				_ = closeQuietly(pc.cur.ch)
				pc.cur = nil
			}
		}
	}()
	cc, err := p.ready(pc, topic)
	if err != nil {
		return err
	}
	if err := p.declareRetained(cc, topic); err != nil {
		return err
	}
	for _, msg := range msgs { // one at a time: a return belongs to the last message
		cc.drainReturns()
		confirms, err := p.send(cc, topic, []*message.Message{msg}, true)
		if err != nil {
			return err
		}
		if err := p.await(cc, topic, []*message.Message{msg}, confirms); err != nil {
			return err
		}
		// The client hands a return over before the confirm that follows
		// it.
		select {
		case r, ok := <-cc.returns:
			if ok {
				p.forget(retainedKey(topic)) // declare the queue again next time
				return fmt.Errorf("message %s: %w: %d %s (no queue bound to the exchange)", msg.UUID, errReturned, r.ReplyCode, r.ReplyText)
			}
		default:
		}
	}
	return nil
}

// errReturned: the broker returned a mandatory message it could not route.
var errReturned = errors.New("returned by the broker")

// declareRetained declares the durable queue that keeps the topic's
// messages published with PublishDurably, bound to its exchange, once per
// connection (after declare, which set declaredOn).
func (p *publisher) declareRetained(cc *confirmChannel, topic string) error {
	key := retainedKey(topic)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.declared[key] {
		return nil
	}
	queue := QueueName(RetainGroup, topic)
	if _, err := cc.ch.QueueDeclare(queue, true, false, false, false, p.queueArgs); err != nil {
		return fmt.Errorf("%w: queue %s: %w", errDeclare, queue, cc.closeReason(err))
	}
	if err := cc.ch.QueueBind(queue, "", topic, false, nil); err != nil {
		return fmt.Errorf("%w: bind queue %s: %w", errDeclare, queue, cc.closeReason(err))
	}
	p.declared[key] = true
	return nil
}

// retainedKey is the key of a topic's retained queue in declared.
func retainedKey(topic string) string { return "queue " + topic }

// connection returns the open connection, or an error while conn
// reconnects.
func (p *publisher) connection() (*amqp.Connection, error) {
	c, _ := p.conn.current()
	if c == nil || c.IsClosed() {
		return nil, errors.New("not connected to the broker")
	}
	return c, nil
}

// recoverPanic turns a panic in the AMQP client into *err, and drops cc (if
// any) so that it is not used again. Deferred by every method that calls the
// client.
func recoverPanic(err *error, cc *confirmChannel) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("panic in the AMQP client: %v", r)
		if cc != nil {
			_ = closeQuietly(cc.ch)
		}
	}
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

// publishAlone publishes msgs on a channel of their own, closed after.
func (p *publisher) publishAlone(topic string, msgs []*message.Message) (err error) {
	defer recoverPanic(&err, nil)
	conn, err := p.connection()
	if err != nil {
		return err
	}
	cc, err := openConfirmChannel(conn)
	if err != nil {
		return err
	}
	defer func() { _ = closeQuietly(cc.ch) }()
	if err := cc.ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w %s: %w", errDeclare, topic, cc.closeReason(err))
	}
	confirms, err := p.send(cc, topic, msgs, false)
	if err != nil {
		return err
	}
	return p.await(cc, topic, msgs, confirms)
}

// ready returns pc's open channel, opening it if needed, with topic's
// exchange declared. The caller holds pc.mu.
func (p *publisher) ready(pc *pubChannel, topic string) (*confirmChannel, error) {
	conn, err := p.connection()
	if err != nil {
		return nil, err
	}
	if pc.cur == nil || pc.cur.ch.IsClosed() {
		cc, err := openConfirmChannel(conn)
		if err != nil {
			return nil, err
		}
		pc.cur = cc
	}
	if err := p.declare(conn, pc.cur, topic); err != nil {
		return nil, err
	}
	return pc.cur, nil
}

// send publishes msgs on cc, mandatory or not, without waiting for their
// confirms.
func (p *publisher) send(cc *confirmChannel, topic string, msgs []*message.Message, mandatory bool) ([]*amqp.DeferredConfirmation, error) {
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, msg := range msgs {
		pub, err := p.marshaler.Marshal(msg)
		if err != nil {
			return nil, fmt.Errorf("marshal message %s: %w", msg.UUID, err)
		}
		dc, err := cc.ch.PublishWithDeferredConfirmWithContext(msg.Context(), topic, "", mandatory, false, pub)
		if err != nil {
			return nil, fmt.Errorf("message %s: %w", msg.UUID, cc.closeReason(err))
		}
		confirms = append(confirms, dc)
	}
	return confirms, nil
}

// await waits for the confirms of msgs, sent on cc.
func (p *publisher) await(cc *confirmChannel, topic string, msgs []*message.Message, confirms []*amqp.DeferredConfirmation) error {
	timeout := time.NewTimer(confirmTimeout)
	defer timeout.Stop()
	for i, dc := range confirms {
		select {
		case <-dc.Done():
		case <-timeout.C:
			_ = cc.ch.Close() // confirms may come late on it: use another
			return fmt.Errorf("message %s: not confirmed within %v", msgs[i].UUID, confirmTimeout)
		}
		if dc.Acked() {
			continue
		}
		if cc.ch.IsClosed() {
			err := cc.closeReason(amqp.ErrClosed)
			if isCode(err, amqp.NotFound) {
				p.forget(topic) // the exchange was deleted: declare it again next time
			}
			return fmt.Errorf("message %s: %w", msgs[i].UUID, err)
		}
		return fmt.Errorf("message %s: the broker refused it (basic.nack)", msgs[i].UUID)
	}
	return nil
}

// declare declares the topic's fanout exchange, once per connection.
func (p *publisher) declare(conn *amqp.Connection, cc *confirmChannel, topic string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.declaredOn != conn {
		p.declaredOn, p.declared = conn, map[string]bool{}
	}
	if p.declared[topic] {
		return nil
	}
	if err := cc.ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w %s: %w", errDeclare, topic, cc.closeReason(err))
	}
	p.declared[topic] = true
	return nil
}

func (p *publisher) forget(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.declared, topic)
}

// Close implements message.Publisher: later publishes fail; the broker
// closes the connection.
func (p *publisher) Close() error {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	return nil
}

func openConfirmChannel(conn *amqp.Connection) (*confirmChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	// Buffered: the client blocks its reader on a full channel. Only
	// PublishDurably publishes mandatory messages, one at a time.
	returns := ch.NotifyReturn(make(chan amqp.Return, 8))
	return &confirmChannel{ch: ch, closed: ch.NotifyClose(make(chan *amqp.Error, 1)), returns: returns}, nil
}

// drainReturns discards returns left from earlier publishes.
func (cc *confirmChannel) drainReturns() {
	for {
		select {
		case <-cc.returns:
		default:
			return
		}
	}
}

// closeReason returns the error the broker closed the channel with, if it
// did, or else err. The client announces the reason before it fails the
// channel's calls and confirms.
func (cc *confirmChannel) closeReason(err error) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.reason == nil {
		select {
		case e, ok := <-cc.closed:
			if ok && e != nil {
				cc.reason = e
			}
		default:
		}
	}
	if cc.reason != nil {
		return cc.reason
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
