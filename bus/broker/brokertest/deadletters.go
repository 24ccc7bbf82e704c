package brokertest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
)

// runConsumerDeadLetters runs the cases of consumer dead letters.
func runConsumerDeadLetters(t *testing.T, f Features, brokerURL func(t *testing.T) string) {
	t.Run("ConsumerDeadLettersStoredAndReplayed", func(t *testing.T) { testConsumerDeadLettersStored(t, f, brokerURL(t)) })
	t.Run("ConsumerDeadLettersKeptOnBroker", func(t *testing.T) { testConsumerDeadLettersOnBroker(t, f, brokerURL(t)) })
}

// testConsumerDeadLettersStored: with the default configuration (a Pool),
// the messages whose handler keeps failing are stored in PostgreSQL with
// everything needed to act on them, listed, and, once the handler is
// fixed, replayed, one through the broker and one straight to the group's
// handler, each applied exactly once; replaying them again applies
// nothing.
func testConsumerDeadLettersStored(t *testing.T, f Features, url string) {
	ctx := context.Background()
	pool := newDB(t)
	var mu sync.Mutex
	broken := map[uuid.UUID]bool{}
	app := startAppWith(t, AppConfig{BrokerURL: url, Pool: pool, Fail: func(ev bus.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if broken[ev.Envelope().ID] {
			return errors.New("handler broken for this event")
		}
		return nil
	}})
	evs := edupulseScenario(2, 2)
	viaBroker, viaHandler := evs[1], evs[len(evs)-2] // a PulseAnswered and a LessonPublished
	mu.Lock()
	broken[viaBroker.Envelope().ID], broken[viaHandler.Envelope().ID] = true, true
	mu.Unlock()
	publish(t, app, pool, evs)
	waitEffects(t, app, pool, len(evs)-2, f.Timeout)

	dead := bus.NewDeadLetters(pool)
	group := app.Consumer.Group()
	var list []bus.ConsumerDeadLetter
	waitUntil(t, app, f.Timeout, "2 consumer dead letters stored", func() bool {
		var err error
		list, err = dead.ListConsumer(ctx, bus.ConsumerListOptions{Group: group})
		if err != nil {
			t.Fatal(err)
		}
		return len(list) == 2
	})
	ids := map[uuid.UUID]int64{}
	for _, dl := range list {
		full, err := dead.GetConsumer(ctx, dl.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ev bus.Event
		for _, e := range []bus.Event{viaBroker, viaHandler} {
			if e.Envelope().ID.String() == dl.MessageUUID {
				ev = e
			}
		}
		if ev == nil {
			t.Fatalf("dead letter of message %s, which the handler did not fail", dl.MessageUUID)
		}
		ids[ev.Envelope().ID] = dl.ID
		if full.Group != group || full.Topic != app.Topic(ev) || full.EventName != ev.EventName() ||
			full.EventVersion != ev.EventVersion() || full.AggregateID != ev.Envelope().AggregateID {
			t.Errorf("dead letter %+v, want group %s, topic %s, event %s v%d of %s", dl, group, app.Topic(ev),
				ev.EventName(), ev.EventVersion(), ev.Envelope().AggregateID)
		}
		if full.Attempts != 3 || !strings.Contains(full.Reason, "handler broken for this event") {
			t.Errorf("dead letter after %d attempts with reason %q, want 3 (MaxRetries 2) and the handler's error", full.Attempts, full.Reason)
		}
		if full.FirstFailedAt.IsZero() || full.LastFailedAt.Before(full.FirstFailedAt) || !full.ReplayedAt.IsZero() {
			t.Errorf("dead letter failed first at %v, last at %v, replayed at %v", full.FirstFailedAt, full.LastFailedAt, full.ReplayedAt)
		}
		if _, ok := full.Metadata[bus.MetadataDeadLetterReason]; ok || full.Metadata[bus.MetadataName] != ev.EventName() {
			t.Errorf("dead letter metadata %v, want the message's (the reason is a column)", full.Metadata)
		}
		msg := message.NewMessage(full.MessageUUID, full.Payload)
		msg.Metadata = full.Metadata
		if got, err := gen.Registry().Decode(msg); err != nil || got.Envelope().ID != ev.Envelope().ID {
			t.Errorf("dead letter payload decodes to %v, %v; want event %s", got, err, ev.Envelope().ID)
		}
	}
	waitUntil(t, app, f.Timeout, "2 dead letters counted", func() bool { return app.Consumer.Stats().DeadLettered == 2 })

	// Fixed, each is replayed and applied once.
	mu.Lock()
	clear(broken)
	mu.Unlock()
	if err := dead.ReplayConsumer(ctx, ids[viaBroker.Envelope().ID], app.Broker.Publisher()); err != nil {
		t.Fatalf("replay through the broker: %v", err)
	}
	waitEffects(t, app, pool, len(evs)-1, f.Timeout)
	if err := app.Consumer.ReplayDeadLetter(ctx, ids[viaHandler.Envelope().ID]); err != nil {
		t.Fatalf("replay to the handler: %v", err)
	}
	if left, err := dead.ListConsumer(ctx, bus.ConsumerListOptions{Group: group}); err != nil || len(left) != 0 {
		t.Fatalf("dead letters left after the replays: %+v, %v", left, err)
	}
	all, err := dead.ListConsumer(ctx, bus.ConsumerListOptions{Group: group, IncludeReplayed: true})
	if err != nil || len(all) != 2 || all[0].ReplayedAt.IsZero() || all[1].ReplayedAt.IsZero() {
		t.Fatalf("replayed dead letters: %+v, %v", all, err)
	}

	// Replayed again, the other way round: the inbox skips both.
	dups := app.Consumer.Stats().Duplicates
	if err := app.Consumer.ReplayDeadLetter(ctx, ids[viaBroker.Envelope().ID]); err != nil {
		t.Fatalf("second replay to the handler: %v", err)
	}
	if err := dead.ReplayConsumer(ctx, ids[viaHandler.Envelope().ID], app.Broker.Publisher()); err != nil {
		t.Fatalf("second replay through the broker: %v", err)
	}
	waitUntil(t, app, f.Timeout, "both second replays skipped by the inbox", func() bool {
		return app.Consumer.Stats().Duplicates >= dups+2
	})
	for _, e := range waitEffects(t, app, pool, len(evs), f.Timeout) {
		if e.Applied != 1 {
			t.Errorf("event %s applied %d times, want once", e.ID, e.Applied)
		}
	}
}

// testConsumerDeadLettersOnBroker: a consumer that dead-letters to the
// broker topic, while nobody subscribes to that topic, never acknowledges a
// message whose dead letter the broker did not keep. Either the broker kept
// the dead letter, and a reader subscribing afterwards receives it, or it
// keeps nothing (GoChannel), and the consumer has acknowledged neither the
// message nor, so, the relay the event's outbox row.
func testConsumerDeadLettersOnBroker(t *testing.T, f Features, url string) {
	ctx := context.Background()
	pool := newDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	refused := gen.NewPulseCreated(uuid.New(), uuid.New(), "refused by the handler", now)
	app := startAppWith(t, AppConfig{BrokerURL: url, Pool: pool, DeadLetterStore: bus.DeadLetterStoreBroker, Fail: func(ev bus.Event) error {
		if ev.Envelope().ID == refused.Envelope().ID {
			return bus.Permanent(errors.New("the handler refuses this event"))
		}
		return nil
	}})
	if err := app.Outbox.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
		return []bus.Event{refused}, nil
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	// The consumer gave up on the event: it published the dead letter, or
	// failed to and got the event again.
	var st bus.ConsumerStats
	waitUntil(t, app, f.Timeout, "the consumer to give up on the event", func() bool {
		st = app.Consumer.Stats()
		return st.DeadLettered >= 1 || st.Failed >= 3
	})
	if st.DeadLettered == 0 {
		status, err := observe.ReadStatus(ctx, pool, "")
		if err != nil {
			t.Fatal(err)
		}
		if status.Backlog() == 1 && app.Consumer.Stats().DeadLettered == 0 {
			t.Logf("the broker kept no dead letter: after %d failed attempts, neither the message nor the outbox row is acknowledged", st.Failed)
			return
		}
		if st = app.Consumer.Stats(); st.DeadLettered == 0 {
			t.Fatalf("the relay acknowledged the event (backlog %d) while the consumer has no dead letter of it: stats %+v", status.Backlog(), st)
		}
	}

	// A reader subscribing now, on a connection of its own, receives the
	// dead letter.
	reader := f.DeadLetterReader
	if reader == "" {
		reader = app.DeadLetterTopic + "_reader"
	}
	b, err := broker.Open(ctx, url, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sub, err := b.Subscriber(reader)
	if err != nil {
		t.Fatal(err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := sub.Subscribe(subCtx, app.DeadLetterTopic)
	if err != nil {
		t.Fatalf("subscribe to the dead letters: %v", err)
	}
	select {
	case m := <-ch:
		m.Ack()
		if m.UUID != refused.Envelope().ID.String() {
			t.Fatalf("dead letter %s, want %s", m.UUID, refused.Envelope().ID)
		}
		if reason := m.Metadata.Get(bus.MetadataDeadLetterReason); !strings.Contains(reason, "the handler refuses this event") {
			t.Errorf("dead letter reason %q, want the handler's error", reason)
		}
	case <-time.After(f.Timeout):
		t.Fatalf("the consumer counted %d dead letter(s), but a reader of the dead-letter topic received none within %s: the broker dropped it",
			st.DeadLettered, f.Timeout)
	}
}

// waitUntil polls cond until it holds, failing after timeout or when the
// application stops.
func waitUntil(t *testing.T, app *App, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-app.done:
			t.Fatalf("the application stopped while waiting for %s: %v", what, app.err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
