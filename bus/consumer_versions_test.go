package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// pingV1 and pingV2 are two versions of one wire name, declared by hand for
// the tests of version routing (the EduPulse events have one version each).
type pingV1 struct {
	env  bus.Envelope
	Text string `json:"text"`
}

func (pingV1) EventName() string        { return "test.ping" }
func (pingV1) EventVersion() int        { return 1 }
func (e pingV1) Envelope() bus.Envelope { return e.env }
func newPingV1(text string) pingV1      { return pingV1{env: bus.NewEnvelope("ping", "p1"), Text: text} }
func newPingV2(text string, n int) pingV2 {
	return pingV2{env: bus.NewEnvelope("ping", "p1"), Text: text, N: n}
}

type pingV2 struct {
	env  bus.Envelope
	Text string `json:"text"`
	N    int    `json:"n"`
}

func (pingV2) EventName() string        { return "test.ping" }
func (pingV2) EventVersion() int        { return 2 }
func (e pingV2) Envelope() bus.Envelope { return e.env }

func decodeInto[T any](set func(*T, bus.Envelope)) func(bus.Envelope, []byte) (bus.Event, error) {
	return func(env bus.Envelope, payload []byte) (bus.Event, error) {
		var e T
		if err := json.Unmarshal(payload, &e); err != nil {
			return nil, err
		}
		set(&e, env)
		ev, _ := any(e).(bus.Event)
		return ev, nil
	}
}

// pingRegistry holds test.ping versions 1 and 2.
var pingRegistry = bus.MustNewRegistry(
	bus.EventType{Name: "test.ping", Version: 1, AggregateType: "ping", GoType: "pingV1",
		Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env })},
	bus.EventType{Name: "test.ping", Version: 2, AggregateType: "ping", GoType: "pingV2",
		Decode: decodeInto(func(e *pingV2, env bus.Envelope) { e.env = env })},
)

// deadLetters subscribes to the default dead-letter topic of a fresh
// GoChannel and returns it with the channel of the dead letters.
func deadLetters(t *testing.T) (message.Publisher, <-chan *message.Message) {
	t.Helper()
	dead := newGoChannel(t)
	sub, err := dead.Subscribe(context.Background(), bus.DeadLetterTopicDefault)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *message.Message, 8)
	go func() { // ack at once: the GoChannel blocks the publisher until then
		for m := range sub {
			m.Ack()
			ch <- m
		}
	}()
	return dead, ch
}

func publishPing(t *testing.T, pub message.Publisher, ev bus.Event) {
	t.Helper()
	msg, err := pingRegistry.NewMessage(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = pub.Publish(ev.EventName(), msg) }() // blocks until acked
}

// Issue 10.1: handlers are keyed by name and version, so each version of
// one name reaches its own handler only, and no handler is handed an event
// of a type it did not ask for.
func TestConsumerTypedHandlersByVersion(t *testing.T) {
	t.Parallel()
	gc := newGoChannel(t)
	dead, _ := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: gc, Group: "versions",
		DeadLetter: dead, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var v1, v2 atomic.Int64
	var v1Text, v2Text atomic.Value
	if err := bus.On(c, func(_ context.Context, e pingV1) error { v1.Add(1); v1Text.Store(e.Text); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := bus.On(c, func(_ context.Context, e pingV2) error { v2.Add(1); v2Text.Store(e.Text); return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	publishPing(t, gc, newPingV1("one"))
	publishPing(t, gc, newPingV2("two", 2))
	waitFor(t, "both messages handled or dead-lettered", func() bool {
		st := c.Stats()
		return st.Handled+st.DeadLettered == 2
	})
	if st := c.Stats(); st.DeadLettered != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v, want no failure and no dead letter", st)
	}
	if v1.Load() != 1 || v2.Load() != 1 {
		t.Fatalf("v1 handler ran %d times, v2 handler %d times; want 1 and 1", v1.Load(), v2.Load())
	}
	if v1Text.Load() != "one" || v2Text.Load() != "two" {
		t.Fatalf("v1 handler got %v, v2 handler got %v", v1Text.Load(), v2Text.Load())
	}
}

// Issue 10.1: a version the registry knows but no handler takes is
// dead-lettered at once with a reason naming the version, without running
// (and panicking in) the other version's handler.
func TestConsumerVersionWithoutHandlerIsDeadLettered(t *testing.T) {
	t.Parallel()
	gc := newGoChannel(t)
	dead, deadCh := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: gc, Group: "v1only",
		DeadLetter: dead, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var v1 atomic.Int64
	if err := bus.On(c, func(context.Context, pingV1) error { v1.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	publishPing(t, gc, newPingV2("two", 2))
	var reason string
	select {
	case m := <-deadCh:
		reason = m.Metadata.Get(bus.MetadataDeadLetterReason)
	case <-time.After(15 * time.Second):
		t.Fatal("no dead letter")
	}
	if strings.Contains(reason, "panic") || !strings.Contains(reason, "version 2") || !strings.Contains(reason, bus.ErrUnknownVersion.Error()) {
		t.Fatalf("dead-letter reason %q, want one naming version 2 as an unknown version, without a panic", reason)
	}
	waitFor(t, "dead letter counted", func() bool { return c.Stats().DeadLettered == 1 })
	if st := c.Stats(); st.Failed != 1 {
		t.Fatalf("stats %+v: want one failed attempt (dead-lettered without retries)", st)
	}
	if v1.Load() != 0 {
		t.Fatalf("v1 handler ran %d times for a v2 message", v1.Load())
	}
	// The consumer goes on with the version it handles.
	publishPing(t, gc, newPingV1("one"))
	waitFor(t, "v1 handled", func() bool { return v1.Load() == 1 && c.Stats().Handled == 1 })
}

// Issue 10.1: a registration that cannot work is an error returned at once,
// never a panic or a handler silently ignored; Run refuses a consumer whose
// registration failed, so an unchecked error is not silent either.
func TestConsumerRegistrationErrors(t *testing.T) {
	t.Parallel()
	newC := func(t *testing.T, group string) *bus.Consumer {
		t.Helper()
		c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: newGoChannel(t), Group: group,
			DeadLetter: newGoChannel(t), Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	noPanic := func(t *testing.T, what string, register func() error) error {
		t.Helper()
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("%s panicked: %v", what, p)
				}
			}()
			err = register()
		}()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		return err
	}

	t.Run("interface", func(t *testing.T) {
		c := newC(t, "iface")
		noPanic(t, "On[bus.Event]", func() error { return bus.On(c, func(context.Context, bus.Event) error { return nil }) })
		noPanic(t, "On[gen.Event]", func() error { return bus.On(c, func(context.Context, gen.Event) error { return nil }) })
		noPanic(t, "OnTx[bus.Event]", func() error {
			return bus.OnTx(c, func(context.Context, pgx.Tx, bus.Event) ([]bus.Event, error) { return nil, nil })
		})
		err := noPanic(t, "On[*pingV1]", func() error { return bus.On(c, func(context.Context, *pingV1) error { return nil }) })
		if !strings.Contains(err.Error(), "pingV1") {
			t.Errorf("error %q does not name the type", err)
		}
		err = c.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "bus.Event") {
			t.Fatalf("Run after failed registrations: %v, want the registration error", err)
		}
	})
	t.Run("not in registry", func(t *testing.T) {
		c := newC(t, "unknown")
		err := noPanic(t, "On[gen.PulseCreated]", func() error {
			return bus.On(c, func(context.Context, gen.PulseCreated) error { return nil })
		})
		if !strings.Contains(err.Error(), "edupulse.pulse.created") {
			t.Errorf("error %q does not name the event", err)
		}
	})
	t.Run("after Run", func(t *testing.T) {
		c := newC(t, "late")
		if err := bus.On(c, func(context.Context, pingV1) error { return nil }); err != nil {
			t.Fatal(err)
		}
		startConsumer(t, c)
		for what, register := range map[string]func() error{
			"On": func() error { return bus.On(c, func(context.Context, pingV2) error { return nil }) },
			"OnTx": func() error {
				return bus.OnTx(c, func(context.Context, pgx.Tx, pingV2) ([]bus.Event, error) { return nil, nil })
			},
			"OnAny": func() error { return c.OnAny(func(context.Context, bus.Event) error { return nil }) },
			"OnAnyTx": func() error {
				return c.OnAnyTx(func(context.Context, pgx.Tx, bus.Event) ([]bus.Event, error) { return nil, nil })
			},
		} {
			if err := noPanic(t, what+" after Run", register); !errors.Is(err, bus.ErrConsumerStarted) {
				t.Errorf("%s after Run: %v, want ErrConsumerStarted", what, err)
			}
		}
	})
}
