package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// malformedPulse is a message of a known event whose payload does not
// decode.
func malformedPulse() *message.Message {
	m := message.NewMessage(uuid.NewString(), []byte(`{"pulse_id": 42}`))
	m.Metadata.Set(bus.MetadataName, "edupulse.pulse.created")
	m.Metadata.Set(bus.MetadataVersion, "1")
	m.Metadata.Set(bus.MetadataAggregateID, uuid.NewString())
	return m
}

// Issue 10.3: with a Pool and otherwise the default configuration (no
// DeadLetter publisher at all), a consumer stores its dead letters in
// PostgreSQL, with group, topic, reason, attempts, payload, metadata and
// failure times; they are listed, replayed straight to the group's handler
// (exactly once, thanks to the inbox) or through the broker, fixed and
// discarded.
func TestConsumerDeadLettersStoredInPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "badges",
		Pool: pool, Logger: testLogger(), MaxRetries: 2, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	var applied atomic.Int64
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		if broken.Load() {
			return nil, errors.New("handler is broken")
		}
		applied.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.ReplayDeadLetter(ctx, 1); !errors.Is(err, bus.ErrConsumerNotStarted) {
		t.Fatalf("ReplayDeadLetter before Run = %v, want ErrConsumerNotStarted", err)
	}
	startConsumer(t, c)

	ev := pulseCreated(uuid.New(), "fails until fixed")
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	malformed := malformedPulse()
	acked := make(chan error, 2)
	go func() { acked <- gc.Publish(ev.EventName(), msg) }() // blocks until acked
	go func() { acked <- gc.Publish(ev.EventName(), malformed) }()

	dead := bus.NewDeadLetters(pool)
	waitFor(t, "2 dead letters stored", func() bool {
		n, err := dead.CountConsumer(ctx)
		return err == nil && n == 2
	})
	for range 2 {
		select {
		case err := <-acked:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a dead-lettered message was not acked")
		}
	}
	waitFor(t, "2 dead letters counted", func() bool { return c.Stats().DeadLettered == 2 })
	list, err := dead.ListConsumer(ctx, bus.ConsumerListOptions{Group: "badges"})
	if err != nil || len(list) != 2 {
		t.Fatalf("ListConsumer = %+v, %v", list, err)
	}
	if other, err := dead.ListConsumer(ctx, bus.ConsumerListOptions{Group: "other"}); err != nil || len(other) != 0 {
		t.Fatalf("ListConsumer of another group = %+v, %v", other, err)
	}
	byID := map[string]bus.ConsumerDeadLetter{}
	for _, dl := range list {
		full, err := dead.GetConsumer(ctx, dl.ID)
		if err != nil {
			t.Fatal(err)
		}
		byID[dl.MessageUUID] = full
		if kind, err := dead.Kind(ctx, dl.ID); err != nil || kind != bus.DeadLetterKindConsumer {
			t.Errorf("Kind(%d) = %q, %v", dl.ID, kind, err)
		}
		if full.Group != "badges" || full.Topic != ev.EventName() || full.EventName != ev.EventName() || full.EventVersion != 1 {
			t.Errorf("dead letter %+v: want group badges, topic and event %s v1", full, ev.EventName())
		}
		if full.FirstFailedAt.IsZero() || full.LastFailedAt.Before(full.FirstFailedAt) || !full.ReplayedAt.IsZero() {
			t.Errorf("dead letter times: first %v, last %v, replayed %v", full.FirstFailedAt, full.LastFailedAt, full.ReplayedAt)
		}
		for k := range full.Metadata {
			if k == bus.MetadataDeadLetterReason || strings.HasPrefix(k, "eventbus_consumer_") || strings.HasSuffix(k, "_poisoned") {
				t.Errorf("dead letter metadata keeps the consumer's own key %q: %v", k, full.Metadata)
			}
		}
	}
	failing, bad := byID[msg.UUID], byID[malformed.UUID]
	if failing.Attempts != 3 || !strings.Contains(failing.Reason, "handler is broken") || string(failing.Payload) != string(msg.Payload) ||
		failing.AggregateID != ev.Envelope().AggregateID || failing.Metadata[bus.MetadataOccurredAt] != msg.Metadata[bus.MetadataOccurredAt] {
		t.Errorf("dead letter of the failing handler: %+v; want 3 attempts (MaxRetries 2), its reason, payload and metadata", failing)
	}
	if bad.Attempts != 1 || !strings.Contains(bad.Reason, bus.ErrMalformedPayload.Error()) || string(bad.Payload) != string(malformed.Payload) {
		t.Errorf("dead letter of the malformed message: %+v; want 1 attempt and %q", bad, bus.ErrMalformedPayload)
	}

	// Another group's consumer refuses the dead letter.
	other, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: newGoChannel(t), Group: "other",
		Pool: pool, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	startConsumer(t, other)
	waitFor(t, "the other consumer running", func() bool {
		select {
		case <-other.Running():
			return true
		default:
			return false
		}
	})
	if err := other.ReplayDeadLetter(ctx, failing.ID); !errors.Is(err, bus.ErrDeadLetterOtherGroup) {
		t.Fatalf("ReplayDeadLetter of another group's dead letter = %v", err)
	}

	// Replayed while the handler still fails: kept, with the attempts
	// added. Through the GoChannel, whose publish returns once the consumer
	// acked, the replay sees the new failure.
	if err := dead.ReplayConsumer(ctx, failing.ID, gc); !errors.Is(err, bus.ErrDeadLetterFailedAgain) || !strings.Contains(err.Error(), "handler is broken") {
		t.Fatalf("ReplayConsumer with the handler still broken = %v, want ErrDeadLetterFailedAgain", err)
	}
	if err := c.ReplayDeadLetter(ctx, failing.ID); err == nil || !strings.Contains(err.Error(), "handler is broken") {
		t.Fatalf("ReplayDeadLetter with the handler still broken = %v", err)
	}
	if got, err := dead.GetConsumer(ctx, failing.ID); err != nil || got.Attempts != 3+3+1 || !got.ReplayedAt.IsZero() ||
		!got.LastFailedAt.After(failing.LastFailedAt) || !got.FirstFailedAt.Equal(failing.FirstFailedAt) {
		t.Fatalf("after two failed replays: %+v, %v; want 7 attempts, the first failure kept, a later last one, not replayed", got, err)
	}
	if n := c.Stats().DeadLettered; n != 3 {
		t.Fatalf("DeadLettered = %d, want 3 (the failed replay through the broker dead-lettered it again)", n)
	}
	// Fixed, it is applied once, and a second replay is skipped by the
	// inbox.
	broken.Store(false)
	for i := range 2 {
		if err := c.ReplayDeadLetter(ctx, failing.ID); err != nil {
			t.Fatalf("replay %d: %v", i+1, err)
		}
	}
	if applied.Load() != 1 || c.Stats().Duplicates != 1 {
		t.Fatalf("applied %d times, %d duplicates; want once and one duplicate", applied.Load(), c.Stats().Duplicates)
	}
	if got, err := dead.GetConsumer(ctx, failing.ID); err != nil || got.ReplayedAt.IsZero() {
		t.Fatalf("replayed dead letter: %+v, %v", got, err)
	}

	// The malformed message cannot be replayed until fixed; then it goes
	// back to its topic through the broker.
	if err := c.ReplayDeadLetter(ctx, bad.ID); !errors.Is(err, bus.ErrMalformedPayload) {
		t.Fatalf("replay of the malformed message = %v", err)
	}
	good, err := gen.Registry().NewMessage(ctx, pulseCreated(uuid.New(), "fixed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.FixConsumer(ctx, bad.ID, good.Payload); err != nil {
		t.Fatal(err)
	}
	if err := dead.ReplayConsumer(ctx, bad.ID, gc); err != nil { // returns once the consumer acked it
		t.Fatalf("ReplayConsumer: %v", err)
	}
	waitFor(t, "the fixed message applied", func() bool { return applied.Load() == 2 })
	if left, err := dead.CountConsumer(ctx); err != nil || left != 0 {
		t.Fatalf("dead letters left: %d, %v", left, err)
	}

	if err := dead.DiscardConsumer(ctx, bad.ID); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		dead.DiscardConsumer(ctx, bad.ID),
		func() error { _, err := dead.GetConsumer(ctx, bad.ID); return err }(),
		func() error { _, err := dead.Kind(ctx, bad.ID); return err }(),
		dead.ReplayConsumer(ctx, bad.ID, gc),
		c.ReplayDeadLetter(ctx, bad.ID),
	} {
		if !errors.Is(err, bus.ErrDeadLetterNotFound) {
			t.Errorf("a discarded dead letter: %v, want ErrDeadLetterNotFound", err)
		}
	}
}

// A dead letter that cannot be stored is not acked: the message is nacked,
// delivered again, and stored once the database takes it.
func TestConsumerDeadLetterNotStoredIsNotAcked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newOutboxDB(t, 1)
	if _, err := pool.Exec(ctx, `ALTER TABLE eventbus_consumer_dead_letters RENAME TO away`); err != nil {
		t.Fatal(err)
	}
	gc := newGoChannel(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "g",
		Pool: pool, Logger: slog.New(slog.DiscardHandler), BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.On(c, func(context.Context, gen.PulseCreated) error { return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	malformed := malformedPulse()
	acked := make(chan error, 1)
	go func() { acked <- gc.Publish("edupulse.pulse.created", malformed) }() // returns once acked
	waitFor(t, "the message delivered again", func() bool { return c.Stats().Failed >= 3 })
	select {
	case err := <-acked:
		t.Fatalf("the message was acked (%v) while its dead letter could not be stored", err)
	default:
	}
	if n := c.Stats().DeadLettered; n != 0 {
		t.Fatalf("DeadLettered = %d while nothing was stored", n)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE away RENAME TO eventbus_consumer_dead_letters`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the message was not acked once its dead letter could be stored")
	}
	list, err := bus.NewDeadLetters(pool).ListConsumer(ctx, bus.ConsumerListOptions{})
	if err != nil || len(list) != 1 || list[0].MessageUUID != malformed.UUID {
		t.Fatalf("dead letters: %+v, %v", list, err)
	}
	waitFor(t, "one dead letter counted", func() bool { return c.Stats().DeadLettered == 1 })
}

// durablePub is a DurablePublisher that refuses the first refusals
// messages.
type durablePub struct {
	refusals atomic.Int64
	durable  atomic.Int64 // PublishDurably calls that succeeded
	plain    atomic.Int64 // Publish calls
}

func (p *durablePub) Publish(string, ...*message.Message) error { p.plain.Add(1); return nil }
func (p *durablePub) PublishDurably(string, ...*message.Message) error {
	if p.refusals.Add(-1) >= 0 {
		return errors.New("not kept")
	}
	p.durable.Add(1)
	return nil
}
func (*durablePub) Close() error { return nil }

// With dead letters going to the broker, the consumer publishes them with
// PublishDurably when the publisher has it, and a refusal there nacks the
// message, which is dead-lettered again later.
func TestConsumerDeadLetterToBrokerUsesPublishDurably(t *testing.T) {
	t.Parallel()
	pub := &durablePub{}
	pub.refusals.Store(2)
	gc := newGoChannel(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "g",
		DeadLetter: pub, Logger: slog.New(slog.DiscardHandler), BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.On(c, func(context.Context, gen.PulseCreated) error { return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	if err := gc.Publish("edupulse.pulse.created", malformedPulse()); err != nil { // returns once acked
		t.Fatal(err)
	}
	st := c.Stats()
	if pub.durable.Load() != 1 || pub.plain.Load() != 0 || st.DeadLettered != 1 || st.Failed != 3 {
		t.Fatalf("PublishDurably succeeded %d times, Publish called %d times, stats %+v; want 1, 0, 1 dead letter after 3 attempts",
			pub.durable.Load(), pub.plain.Load(), st)
	}
}

func TestConsumerDeadLetterStoreConfig(t *testing.T) {
	t.Parallel()
	pool, _ := newOutboxDB(t, 1)
	base := bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: newGoChannel(t), Group: "g"}
	for _, tc := range []struct {
		name string
		edit func(*bus.ConsumerConfig)
		want string // "" for a valid configuration
	}{
		{"a Pool and no publisher", func(c *bus.ConsumerConfig) { c.Pool = pool }, ""},
		{"neither", func(c *bus.ConsumerConfig) {}, "nil DeadLetter publisher"},
		{"database without a Pool", func(c *bus.ConsumerConfig) {
			c.DeadLetterStore, c.DeadLetter = bus.DeadLetterStoreDatabase, newGoChannel(t)
		}, "DeadLetterStoreDatabase needs a Pool"},
		{"broker without a publisher", func(c *bus.ConsumerConfig) {
			c.DeadLetterStore, c.Pool = bus.DeadLetterStoreBroker, pool
		}, "nil DeadLetter publisher"},
		{"unknown store", func(c *bus.ConsumerConfig) { c.DeadLetterStore, c.Pool = 7, pool }, "unknown DeadLetterStore 7"},
	} {
		cfg := base
		tc.edit(&cfg)
		_, err := bus.NewConsumer(cfg)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: NewConsumer = %v, want %q", tc.name, err, tc.want)
		}
	}
}
