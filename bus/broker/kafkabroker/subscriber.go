package kafkabroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// nackResendSleep is the pause before a nacked message is delivered again
// (watermill-kafka's default).
const nackResendSleep = 100 * time.Millisecond

// groupSubscriber subscribes a consumer group to topics: one Sarama client
// and consumer group per topic, kept for the subscription's whole life.
//
// watermill-kafka's subscriber closes the consumer group and makes a new
// one, with a new client, whenever Consume returns an error, as it does
// when the broker goes away (a failed metadata refresh, or the last offset
// commit of the session). The closed member cannot leave the group while
// the broker is down, so the group keeps it, and a broker that keeps
// groups across a restart (Kafka; kfake with a data directory) restores
// it: the next rebalance then waits for that member, which never comes
// back, until its session timeout (10 s) expires, and no member of the
// group consumes meanwhile. This subscriber calls Consume again on the
// same consumer group instead, so the member rejoins under its own id.
type groupSubscriber struct {
	b     *kafkaBroker
	group string

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

func newGroupSubscriber(b *kafkaBroker, group string) *groupSubscriber {
	return &groupSubscriber{b: b, group: group, closing: make(chan struct{})}
}

// Subscribe consumes topic as a member of the group until ctx is done or
// the subscriber is closed.
func (s *groupSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("subscriber closed")
	}
	client, err := sarama.NewClient(s.b.cfg.brokers, s.b.cfg.subscriberConfig())
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	group, err := sarama.NewConsumerGroupFromClient(s.group, client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("consumer group: %w", err)
	}
	fields := watermill.LogFields{"provider": "kafka", "topic": topic, "consumer_group": s.group}
	out := make(chan *message.Message)
	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		for err := range group.Errors() { // closed by group.Close
			s.b.logger.Error("Sarama internal error", err, fields)
		}
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.consume(ctx, group, topic, out, fields)
		if err := group.Close(); err != nil {
			s.b.logger.Info("Consumer group closed with an error", fields.Add(watermill.LogFields{"err": err.Error()}))
		}
		if err := client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
			s.b.logger.Info("Kafka client closed with an error", fields.Add(watermill.LogFields{"err": err.Error()}))
		}
		close(out)
	}()
	return out, nil
}

// consume runs the group's sessions one after the other until ctx is done:
// Consume returns at each rebalance, and with an error when the broker
// cannot be reached; it is called again, on the same consumer group, after
// a pause (reconnectRetrySleep) when it failed.
func (s *groupSubscriber) consume(ctx context.Context, group sarama.ConsumerGroup, topic string, out chan<- *message.Message, fields watermill.LogFields) {
	h := groupHandler{ctx: ctx, out: out, logger: s.b.logger, fields: fields}
	for ctx.Err() == nil {
		err := group.Consume(ctx, []string{topic}, h)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			continue // a rebalance: the next session
		}
		s.b.logger.Error("Group consume error, consuming again", err, fields)
		select {
		case <-ctx.Done():
		case <-time.After(s.b.cfg.reconnectRetrySleep()):
		}
	}
}

// Close stops every subscription and waits until their consumer groups
// left and their clients are closed.
func (s *groupSubscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}

// groupHandler hands a session's messages to the subscription's channel,
// one at a time per partition, and marks each offset once acked.
type groupHandler struct {
	ctx    context.Context
	out    chan<- *message.Message
	logger watermill.LoggerAdapter
	fields watermill.LogFields
}

func (groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case km, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if sess.Context().Err() != nil || h.ctx.Err() != nil {
				// The session ended (a message nacked before may not
				// have been delivered again): the next session
				// starts from the last marked offset, in order.
				return nil
			}
			if err := h.deliver(sess, km); err != nil {
				return err
			}
		case <-sess.Context().Done():
			return nil
		case <-h.ctx.Done():
			return nil
		}
	}
}

// deliver sends one message until it is acked, again after each nack, and
// marks its offset when acked. A message handed to the subscriber is waited
// for even if the session ends meanwhile: the next session redelivers it
// only after, so one partition's messages are never handled concurrently.
func (h groupHandler) deliver(sess sarama.ConsumerGroupSession, km *sarama.ConsumerMessage) error {
	msg, err := marshaler.Unmarshal(km)
	if err != nil {
		return fmt.Errorf("kafkabroker: unmarshal %s/%d@%d: %w", km.Topic, km.Partition, km.Offset, err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	for {
		msg.SetContext(ctx)
		select {
		case h.out <- msg:
		case <-ctx.Done():
			return nil
		}
		select {
		case <-msg.Acked():
			if sess.Context().Err() == nil {
				sess.MarkMessage(km, "")
			}
			return nil
		case <-msg.Nacked():
		case <-ctx.Done():
			return nil
		}
		if sess.Context().Err() != nil {
			return nil // the next session delivers it again
		}
		msg = msg.Copy()
		select {
		case <-time.After(nackResendSleep):
		case <-ctx.Done():
			return nil
		}
	}
}
