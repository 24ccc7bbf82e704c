package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
)

// upcastPing converts test.ping version 1 into version 2, as a generated
// registry's EventType.Upcast does: N is the length of the text.
func upcastPing(ev bus.Event) (bus.Event, error) {
	v1, ok := ev.(pingV1)
	if !ok {
		return nil, errors.New("not a pingV1")
	}
	if v1.Text == "unconvertible" {
		return nil, errors.New("text cannot be converted")
	}
	return pingV2{env: v1.env, Text: v1.Text, N: len(v1.Text)}, nil
}

// pingV3 is a third version of test.ping, for chains.
type pingV3 struct {
	env   bus.Envelope
	Words []string `json:"words"`
}

func (pingV3) EventName() string        { return "test.ping" }
func (pingV3) EventVersion() int        { return 3 }
func (e pingV3) Envelope() bus.Envelope { return e.env }

func upcastPingV2(ev bus.Event) (bus.Event, error) {
	v2 := ev.(pingV2)
	return pingV3{env: v2.env, Words: strings.Fields(v2.Text)}, nil
}

// upcastRegistry holds test.ping versions 1 and 2 with an upcaster from 1
// to 2.
var upcastRegistry = bus.MustNewRegistry(
	bus.EventType{Name: "test.ping", Version: 1, AggregateType: "ping", GoType: "pingV1",
		Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env }), Upcast: upcastPing},
	bus.EventType{Name: "test.ping", Version: 2, AggregateType: "ping", GoType: "pingV2",
		Decode: decodeInto(func(e *pingV2, env bus.Envelope) { e.env = env })},
)

// newUpcastConsumer returns a consumer on upcastRegistry reading gc.
func newUpcastConsumer(t *testing.T, group string) (*bus.Consumer, *goChannelPair) {
	t.Helper()
	gc := newGoChannel(t)
	dead, deadCh := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: upcastRegistry, Subscriber: gc, Group: group,
		DeadLetter: dead, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return c, &goChannelPair{pub: gc, dead: deadCh}
}

type goChannelPair struct {
	pub  message.Publisher
	dead <-chan *message.Message
}

// Issue 11: a handler of the latest version also receives the events
// published with an earlier one, converted by the upcaster, with their
// envelope (id, aggregate) unchanged. On main, the v1 message was
// dead-lettered with ErrUnknownVersion: no handler took version 1.
func TestConsumerUpcastsToLaterVersionHandler(t *testing.T) {
	t.Parallel()
	c, ch := newUpcastConsumer(t, "upcast-latest")
	var mu sync.Mutex
	var got []pingV2
	if err := bus.On(c, func(_ context.Context, e pingV2) error {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	old := newPingV1("hello")
	publishPing(t, ch.pub, old)
	waitFor(t, "v1 message handled or dead-lettered", func() bool {
		st := c.Stats()
		return st.Handled+st.DeadLettered == 1
	})
	publishPing(t, ch.pub, newPingV2("current", 7))
	waitFor(t, "both messages handled or dead-lettered", func() bool {
		st := c.Stats()
		return st.Handled+st.DeadLettered == 2
	})
	if st := c.Stats(); st.DeadLettered != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v, want both messages handled", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("v2 handler got %d events, want 2", len(got))
	}
	up := got[0]
	if up.Text != "hello" || up.N != 5 {
		t.Errorf("upcast event %+v, want text hello and N 5", up)
	}
	if up.Envelope().ID != old.Envelope().ID || up.Envelope().AggregateID != old.Envelope().AggregateID {
		t.Errorf("upcast envelope %+v, want the v1 event's %+v", up.Envelope(), old.Envelope())
	}
	if got[1].Text != "current" || got[1].N != 7 {
		t.Errorf("v2 event %+v, want it as published", got[1])
	}
}

// Issue 11: a handler registered for the old version still receives
// exactly that version, while a handler of the new version of the same
// consumer receives the same message converted.
func TestConsumerOldVersionHandlerGetsItsVersion(t *testing.T) {
	t.Parallel()
	c, ch := newUpcastConsumer(t, "upcast-both")
	var v1Got, v2Got atomic.Value
	var v1Runs, v2Runs atomic.Int64
	if err := bus.On(c, func(_ context.Context, e pingV1) error { v1Runs.Add(1); v1Got.Store(e); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := bus.On(c, func(_ context.Context, e pingV2) error { v2Runs.Add(1); v2Got.Store(e); return nil }); err != nil {
		t.Fatal(err)
	}
	var anyVersions sync.Map
	if err := c.OnAny(func(_ context.Context, e bus.Event) error { anyVersions.Store(e.EventVersion(), true); return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	publishPing(t, ch.pub, newPingV1("abc"))
	waitFor(t, "v1 message handled", func() bool { return c.Stats().Handled+c.Stats().DeadLettered == 1 })
	if v1Runs.Load() != 1 || v2Runs.Load() != 1 {
		t.Fatalf("for a v1 message: v1 handler ran %d times, v2 handler %d; want 1 and 1", v1Runs.Load(), v2Runs.Load())
	}
	if e := v1Got.Load().(pingV1); e.Text != "abc" {
		t.Errorf("v1 handler got %+v", e)
	}
	if e := v2Got.Load().(pingV2); e.Text != "abc" || e.N != 3 {
		t.Errorf("v2 handler got %+v, want the v1 event upcast", e)
	}
	if _, ok := anyVersions.Load(1); !ok {
		t.Errorf("OnAny did not receive the event as published (version 1)")
	}
	publishPing(t, ch.pub, newPingV2("xyz", 9))
	waitFor(t, "v2 message handled", func() bool { return c.Stats().Handled+c.Stats().DeadLettered == 2 })
	if v1Runs.Load() != 1 || v2Runs.Load() != 2 {
		t.Fatalf("after a v2 message: v1 handler ran %d times, v2 handler %d; want 1 and 2 (never downcast)", v1Runs.Load(), v2Runs.Load())
	}
	if st := c.Stats(); st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Issue 11: an upcaster that fails dead-letters the message at once (the
// same payload would fail again), with the upcaster's error as the reason.
func TestConsumerFailedUpcastIsDeadLettered(t *testing.T) {
	t.Parallel()
	c, ch := newUpcastConsumer(t, "upcast-fails")
	var v2Runs atomic.Int64
	if err := bus.On(c, func(context.Context, pingV2) error { v2Runs.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	publishPing(t, ch.pub, newPingV1("unconvertible"))
	var reason string
	select {
	case m := <-ch.dead:
		reason = m.Metadata.Get(bus.MetadataDeadLetterReason)
	case <-time.After(15 * time.Second):
		t.Fatal("no dead letter")
	}
	if !strings.Contains(reason, "text cannot be converted") || !strings.Contains(reason, "version 1 to 2") {
		t.Fatalf("dead-letter reason %q, want the upcaster's error and the versions", reason)
	}
	waitFor(t, "dead letter counted", func() bool { return c.Stats().DeadLettered == 1 })
	if st := c.Stats(); st.Failed != 1 || v2Runs.Load() != 0 {
		t.Fatalf("stats %+v, handler runs %d: want one failed attempt and no handler run", st, v2Runs.Load())
	}
}

// Issue 11: an OnTx handler of the new version receives the old version
// converted, and the inbox recognises a redelivery by the event id the
// conversion kept.
func TestConsumerUpcastOnTxKeepsInboxIdentity(t *testing.T) {
	t.Parallel()
	pool, _ := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	dead, _ := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: upcastRegistry, Subscriber: gc, Group: "upcast-tx",
		DeadLetter: dead, Pool: pool, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int64
	if err := bus.OnTx(c, func(_ context.Context, _ pgx.Tx, e pingV2) ([]bus.Event, error) {
		if e.N != 4 {
			return nil, bus.Permanent(errors.New("not converted"))
		}
		applied.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	ev := newPingV1("four")
	msg, err := upcastRegistry.NewMessage(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := gc.Publish(ev.EventName(), msg.Copy()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both deliveries handled", func() bool { return c.Stats().Handled+c.Stats().DeadLettered == 2 })
	if st := c.Stats(); st.Duplicates != 1 || st.DeadLettered != 0 || applied.Load() != 1 {
		t.Fatalf("stats %+v, applied %d: want one application and one duplicate", st, applied.Load())
	}
}

func TestRegistryUpcast(t *testing.T) {
	t.Parallel()
	reg := bus.MustNewRegistry(
		bus.EventType{Name: "test.ping", Version: 1, GoType: "pingV1",
			Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env }), Upcast: upcastPing},
		bus.EventType{Name: "test.ping", Version: 2, GoType: "pingV2",
			Decode: decodeInto(func(e *pingV2, env bus.Envelope) { e.env = env }), Upcast: upcastPingV2},
		bus.EventType{Name: "test.ping", Version: 3, GoType: "pingV3",
			Decode: decodeInto(func(e *pingV3, env bus.Envelope) { e.env = env })},
	)
	v1 := newPingV1("a chain of two")
	got, err := reg.UpcastLatest(v1)
	if err != nil {
		t.Fatal(err)
	}
	v3, ok := got.(pingV3)
	if !ok || len(v3.Words) != 4 || v3.Envelope() != v1.Envelope() {
		t.Fatalf("UpcastLatest(v1) = %#v, want a pingV3 of 4 words with the v1 envelope", got)
	}
	if got, err := reg.Upcast(v1, 1); err != nil || got != bus.Event(v1) {
		t.Errorf("Upcast to its own version = %v, %v; want the event itself", got, err)
	}
	if v, ok := reg.Latest("test.ping"); !ok || v != 3 {
		t.Errorf("Latest = %d, %v", v, ok)
	}
	if got := reg.UpcastTargets("test.ping", 1); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("UpcastTargets(1) = %v, want [2 3]", got)
	}
	for name, tc := range map[string]struct {
		ev      bus.Event
		version int
		want    error
		text    string
	}{
		"downcast":        {newPingV2("x", 1), 1, bus.ErrUnknownVersion, "never downcast"},
		"unknown version": {v1, 4, bus.ErrUnknownVersion, "version 4"},
		"unknown name":    {pingOther{}, 1, bus.ErrUnknownEvent, "test.other"},
	} {
		if _, err := reg.Upcast(tc.ev, tc.version); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: error %v, want %v mentioning %q", name, err, tc.want, tc.text)
		}
	}

	// A retired version (no upcaster) stops the chain.
	retired := bus.MustNewRegistry(
		bus.EventType{Name: "test.ping", Version: 1, GoType: "pingV1",
			Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env })},
		bus.EventType{Name: "test.ping", Version: 2, GoType: "pingV2",
			Decode: decodeInto(func(e *pingV2, env bus.Envelope) { e.env = env })},
	)
	if _, err := retired.Upcast(v1, 2); !errors.Is(err, bus.ErrUnknownVersion) || !strings.Contains(err.Error(), "version 1 has no upcaster") {
		t.Errorf("upcast past a retired version: %v", err)
	}
	if got := retired.UpcastTargets("test.ping", 1); len(got) != 0 {
		t.Errorf("UpcastTargets past a retired version = %v", got)
	}

	// An upcaster must lead to the next version, which must be registered.
	if _, err := bus.NewRegistry(bus.EventType{Name: "test.ping", Version: 1, GoType: "pingV1",
		Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env }), Upcast: upcastPing}); err == nil ||
		!strings.Contains(err.Error(), "version 2 is not registered") {
		t.Errorf("NewRegistry with an upcaster to nowhere: %v", err)
	}
	wrong := bus.MustNewRegistry(
		bus.EventType{Name: "test.ping", Version: 1, GoType: "pingV1",
			Decode: decodeInto(func(e *pingV1, env bus.Envelope) { e.env = env }),
			Upcast: func(ev bus.Event) (bus.Event, error) { return ev, nil }},
		bus.EventType{Name: "test.ping", Version: 2, GoType: "pingV2",
			Decode: decodeInto(func(e *pingV2, env bus.Envelope) { e.env = env })},
	)
	if _, err := wrong.Upcast(v1, 2); err == nil || !strings.Contains(err.Error(), "want version 2") {
		t.Errorf("an upcaster returning the wrong version: %v", err)
	}
}

type pingOther struct{}

func (pingOther) EventName() string      { return "test.other" }
func (pingOther) EventVersion() int      { return 1 }
func (pingOther) Envelope() bus.Envelope { return bus.Envelope{} }
