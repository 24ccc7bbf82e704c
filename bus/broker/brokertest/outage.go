package brokertest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
)

// RunOutage checks that the relay's pipeline loses nothing and keeps every
// aggregate's order when the broker fails in the middle of a pipelined
// batch. The relay runs with its default configuration (several events of
// a lane in flight), through a publisher that fails one event once, in the
// middle of the first events; then, while events are in flight, the broker
// restarts (restart returns once it accepts connections again), and more
// events are written. Every event must be applied once in effect, and the
// relay must never have sent an event while an earlier event of its
// aggregate was in flight or not yet confirmed (checked as each Publish
// starts). At least two Publish calls must have been in flight at once.
//
// brokerURL must survive the restart (same address; durable topics and
// groups), and should let a consumer's unacknowledged messages come back
// soon after it (NATS: a short ack_wait).
func RunOutage(t *testing.T, brokerURL string, restart func(tb testing.TB)) {
	const timeout = 120 * time.Second
	pool := newDB(t)
	evs := edupulseScenario(24, 8)
	half := len(evs) / 2
	victim := evs[3].Envelope().ID.String()
	sink := &outageSink{t: t, victim: victim, order: map[string][]string{}, inFlight: map[string]string{},
		confirmed: map[string]bool{}, failed: make(chan struct{})}
	for _, ev := range evs {
		agg := ev.Envelope().AggregateID
		sink.order[agg] = append(sink.order[agg], ev.Envelope().ID.String())
	}
	app := startAppWith(t, AppConfig{BrokerURL: brokerURL, Pool: pool, DefaultRelay: true,
		RelayPublisher: func(p message.Publisher) message.Publisher {
			sink.Publisher = p
			return sink
		}})

	publish(t, app, pool, evs[:half])
	select {
	case <-sink.failed:
	case <-time.After(timeout):
		t.Fatal("the victim event was never published")
	}
	// Restart while the first half is still being relayed or consumed.
	waitEffects(t, app, pool, half/4, timeout)
	restart(t)
	publish(t, app, pool, evs[half:])

	effs := waitEffects(t, app, pool, len(evs), timeout)
	want := map[uuid.UUID]bool{}
	for _, ev := range evs {
		want[ev.Envelope().ID] = true
	}
	for _, e := range effs {
		if !want[e.ID] {
			t.Fatalf("applied unknown event %s", e.ID)
		}
		if e.Applied != 1 {
			t.Errorf("event %s applied %d times, want once", e.ID, e.Applied)
		}
	}
	if len(effs) != len(evs) {
		t.Fatalf("applied %d events, want %d", len(effs), len(evs))
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	t.Logf("%d events, %d Publish calls (%d failed), at most %d in flight at once", len(evs), sink.calls, sink.failures, sink.maxConcurrent)
	if sink.maxConcurrent < 2 {
		t.Fatalf("at most %d Publish call in flight: the relay did not pipeline", sink.maxConcurrent)
	}
}

// outageSink wraps the broker's publisher for RunOutage: it fails the
// victim's first attempt and checks the relay's order promise as each
// Publish starts.
type outageSink struct {
	message.Publisher
	t      *testing.T
	victim string
	order  map[string][]string // aggregate → event ids in publish order

	mu            sync.Mutex
	inFlight      map[string]string // aggregate → event id in flight
	confirmed     map[string]bool
	failedOnce    bool
	failed        chan struct{}
	calls         int
	failures      int
	concurrent    int
	maxConcurrent int
}

// PublishesConcurrently implements bus.ConcurrentPublisher, as the broker
// adapters' publishers do.
func (s *outageSink) PublishesConcurrently() bool { return true }

func (s *outageSink) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		if err := s.publish(topic, msg); err != nil {
			return err
		}
	}
	return nil
}

func (s *outageSink) publish(topic string, msg *message.Message) error {
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
	fail := msg.UUID == s.victim && !s.failedOnce
	if fail {
		s.failedOnce = true
		close(s.failed)
	}
	s.mu.Unlock()

	var err error
	if fail {
		err = errors.New("brokertest: the broker failed this one event")
	} else {
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

var _ bus.ConcurrentPublisher = (*outageSink)(nil)
