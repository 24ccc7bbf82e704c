package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// resubscribePause is the pause before consuming again after a channel
// failed on a connection that is still up.
const resubscribePause = 100 * time.Millisecond

// subscriber is a consumer group's subscriber, on a connection of its own:
// per topic, a channel consuming the group's queue, opened again after the
// connection came back. It replaces watermill-amqp's subscriber, which
// reads its connection's fields while they are replaced on reconnect (see
// conn).
type subscriber struct {
	conn   *conn
	cfg    config
	group  string
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // consuming goroutines
}

func newSubscriber(cfg config, group string, logger watermill.LoggerAdapter) (*subscriber, error) {
	c, err := dial(cfg.uri, cfg.reconnectMax, logger)
	if err != nil {
		return nil, err
	}
	return &subscriber{conn: c, cfg: cfg, group: group, logger: logger, closing: make(chan struct{})}, nil
}

// Subscribe implements message.Subscriber. The group's queue is declared
// and bound before it returns, so that it receives every message published
// to the topic from then on. The channel is closed when ctx ends or the
// subscriber closes.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("amqpbroker: subscribe %s to %s: subscriber closed", s.group, topic)
	}
	c, _ := s.conn.current()
	if c == nil {
		return nil, fmt.Errorf("amqpbroker: subscribe %s to %s: not connected to the broker", s.group, topic)
	}
	if err := s.declare(c, topic); err != nil {
		return nil, fmt.Errorf("amqpbroker: subscribe %s to %s: %w", s.group, topic, err)
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go s.consume(ctx, topic, out)
	return out, nil
}

// declare declares the topic's exchange and the group's queue, bound to it.
func (s *subscriber) declare(c *amqp.Connection, topic string) error {
	ch, err := c.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	return s.declareOn(ch, topic)
}

func (s *subscriber) declareOn(ch *amqp.Channel, topic string) error {
	queue := QueueName(s.group, topic)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, s.cfg.queueArgs()); err != nil {
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	if err := ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w %s: %w", errDeclare, topic, err)
	}
	if err := ch.QueueBind(queue, "", topic, false, nil); err != nil {
		return fmt.Errorf("bind queue %s to %s: %w", queue, topic, err)
	}
	return nil
}

// consume consumes the topic's queue until ctx ends or the subscriber
// closes, again after each failure, on the connection of the moment.
func (s *subscriber) consume(ctx context.Context, topic string, out chan *message.Message) {
	defer s.wg.Done()
	defer close(out)
	fields := watermill.LogFields{"topic": topic}
	for {
		c, changed := s.conn.current()
		if c == nil {
			select { // reconnecting
			case <-changed:
				continue
			case <-s.closing:
				return
			case <-ctx.Done():
				return
			}
		}
		err := s.consumeOn(ctx, c, topic, out)
		select {
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		default:
		}
		s.logger.Info("Consuming stopped, consuming again", fields.Add(watermill.LogFields{"error": fmt.Sprint(err)}))
		select {
		case <-changed:
		case <-time.After(resubscribePause):
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
	}
}

// consumeOn consumes on a channel of c until the channel closes, ctx ends
// or the subscriber closes. A panic in the AMQP client while it does is
// recovered and returned as an error: the subscription starts over on a
// new channel instead of ending the process.
func (s *subscriber) consumeOn(ctx context.Context, c *amqp.Connection, topic string, out chan *message.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
			s.logger.Error("Recovered from a panic in the AMQP client", err, watermill.LogFields{"topic": topic})
		}
	}()
	ch, err := c.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer func() { _ = ch.Close() }()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Qos(s.cfg.prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	// Again: the queue may have been deleted meanwhile.
	if err := s.declareOn(ch, topic); err != nil {
		return err
	}
	deliveries, err := ch.Consume(QueueName(s.group, topic), "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("deliveries stopped")
			}
			if err := s.handle(ctx, d, out); err != nil {
				return err
			}
		case e := <-closed:
			return connErr(e)
		case <-s.closing:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// handle hands a delivery out and acks or nacks (requeues) it as the
// consumer says; one that is not taken or not settled before the
// subscription stops is requeued.
func (s *subscriber) handle(ctx context.Context, d amqp.Delivery, out chan *message.Message) error {
	msg, err := s.cfg.marshaler().Unmarshal(d)
	if err != nil { // the marshaler is tolerant: this does not happen
		return d.Nack(false, true)
	}
	if d.Redelivered {
		msg.Metadata.Set(wamqp.MetadataRedeliveredKey, "true")
	}
	msgCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	msg.SetContext(msgCtx)
	select {
	case out <- msg:
	case <-s.closing:
		return d.Nack(false, true)
	case <-ctx.Done():
		return d.Nack(false, true)
	}
	select {
	case <-msg.Acked():
		return d.Ack(false)
	case <-msg.Nacked():
		return d.Nack(false, true)
	case <-s.closing:
		return d.Nack(false, true)
	case <-ctx.Done():
		return d.Nack(false, true)
	}
}

// Close stops the subscriptions (messages handed out and not settled are
// requeued) and closes the connection.
func (s *subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	return s.conn.Close()
}
