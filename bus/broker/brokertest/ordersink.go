package brokertest

import (
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edupulse/eventbus/bus"
)

// OrderSink is a message.Publisher in front of another (Publisher) that
// checks, as each Publish starts, the relay's promise for an aggregate: no
// event is sent while another event of its aggregate is in flight, nor
// before every earlier event of its aggregate was confirmed at least once.
// A broken promise fails the test. It counts the Publish calls, the failed
// ones and the most in flight at once, and says it publishes concurrently
// (bus.ConcurrentPublisher), so that the relay pipelines by default.
type OrderSink struct {
	message.Publisher
	// Before, when set, runs as each Publish starts, outside the sink's
	// lock; an error it returns fails that Publish as the broker would,
	// without calling Publisher.
	Before func(msg *message.Message) error

	t     testing.TB
	order map[string][]string // aggregate → event ids, in the order written

	mu            sync.Mutex
	inFlight      map[string]string // aggregate → event id being published
	confirmed     map[string]bool   // event ids confirmed at least once
	calls         int
	failures      int
	concurrent    int
	maxConcurrent int
}

// NewOrderSink returns an OrderSink in front of pub for events, in the
// order they are written to the outbox.
func NewOrderSink(t testing.TB, pub message.Publisher, events []bus.Event) *OrderSink {
	s := &OrderSink{Publisher: pub, t: t, order: map[string][]string{},
		inFlight: map[string]string{}, confirmed: map[string]bool{}}
	for _, ev := range events {
		agg := ev.Envelope().AggregateID
		s.order[agg] = append(s.order[agg], ev.Envelope().ID.String())
	}
	return s
}

// PublishesConcurrently implements bus.ConcurrentPublisher, as the broker
// adapters' publishers do.
func (s *OrderSink) PublishesConcurrently() bool { return true }

// Publish implements message.Publisher.
func (s *OrderSink) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		if err := s.publish(topic, msg); err != nil {
			return err
		}
	}
	return nil
}

func (s *OrderSink) publish(topic string, msg *message.Message) error {
	agg := msg.Metadata.Get(bus.MetadataAggregateID)
	s.mu.Lock()
	s.calls++
	if other, ok := s.inFlight[agg]; ok {
		s.t.Errorf("aggregate %s: event %s sent while %s is in flight", agg, msg.UUID, other)
	}
	for _, id := range s.order[agg] {
		if id == msg.UUID {
			break
		}
		if !s.confirmed[id] {
			s.t.Errorf("aggregate %s: event %s sent before the earlier %s was confirmed", agg, msg.UUID, id)
		}
	}
	s.inFlight[agg] = msg.UUID
	s.concurrent++
	s.maxConcurrent = max(s.maxConcurrent, s.concurrent)
	s.mu.Unlock()

	var err error
	if s.Before != nil {
		err = s.Before(msg)
	}
	if err == nil {
		err = s.Publisher.Publish(topic, msg)
	}

	s.mu.Lock()
	delete(s.inFlight, agg)
	s.concurrent--
	if err != nil {
		s.failures++
	} else {
		s.confirmed[msg.UUID] = true
	}
	s.mu.Unlock()
	return err
}

// Confirmed returns how many distinct events were confirmed.
func (s *OrderSink) Confirmed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.confirmed)
}

// Calls returns how many events Publish was called for, and how many of
// those failed.
func (s *OrderSink) Calls() (calls, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.failures
}

// MaxConcurrent returns the most events that were being published at once.
func (s *OrderSink) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConcurrent
}

var _ bus.ConcurrentPublisher = (*OrderSink)(nil)
