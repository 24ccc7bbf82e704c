package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// routedEvents is one event of every EduPulse type.
func routedEvents() []bus.Event {
	now := time.Now().UTC().Truncate(time.Microsecond)
	pulse, author := uuid.New(), uuid.New()
	return []bus.Event{
		gen.NewPulseCreated(pulse, author, "routed", now),
		gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), now),
		gen.NewLessonPublished(uuid.New(), author, "routed", now),
		gen.NewBadgeAwarded(uuid.New(), author, "routed", now),
	}
}

// arrivals records the events a consumer handled and the topic each came
// on.
type arrivals struct {
	mu     sync.Mutex
	topics map[uuid.UUID]string
}

func (a *arrivals) handler(ctx context.Context, ev bus.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.topics == nil {
		a.topics = map[uuid.UUID]string{}
	}
	a.topics[ev.Envelope().ID] = message.SubscribeTopicFromCtx(ctx)
	return nil
}

func (a *arrivals) snapshot() map[uuid.UUID]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[uuid.UUID]string, len(a.topics))
	for k, v := range a.topics {
		out[k] = v
	}
	return out
}

// publishThroughRelay commits evs through ob and relays them to pub.
func publishThroughRelay(t *testing.T, pool *pgxpool.Pool, ob *bus.Outbox, pub message.Publisher, evs []bus.Event) {
	t.Helper()
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: pub})
	if err := ob.InTx(context.Background(), pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil }); err != nil {
		t.Fatal(err)
	}
}

// waitArrived waits until every event of evs arrived, and checks that each
// came on the topic routing gives its type.
func waitArrived(t *testing.T, got *arrivals, routing bus.Routing, evs []bus.Event) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(got.snapshot()) < len(evs) {
		if time.Now().After(deadline) {
			t.Fatalf("consumer received %d of %d events", len(got.snapshot()), len(evs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	topics := got.snapshot()
	for _, ev := range evs {
		want, err := routing.Topic(gen.Registry(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if topics[ev.Envelope().ID] != want {
			t.Errorf("%s arrived on topic %q, want %q", ev.EventName(), topics[ev.Envelope().ID], want)
		}
	}
}

// Issue 10.4: one routing value configures the producer and the consumer;
// switching it is one change, and the events still arrive, each on its
// routed topic.
func TestRoutingSwitchedOnBothSides(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		routing bus.Routing
		topics  []string
	}{
		{"Default", bus.Routing{}, gen.Registry().Names()},
		{"ByEventName", bus.RouteByEventName(), gen.Registry().Names()},
		{"ByAggregateType", bus.RouteByAggregateType("edupulse."), []string{"edupulse.lesson", "edupulse.pulse", "edupulse.user"}},
		{"OneTopic", bus.RouteToTopic("edupulse"), []string{"edupulse"}},
		{"Custom", bus.RouteBy("by version", func(t bus.EventType) string { return fmt.Sprintf("v%d", t.Version) }), []string{"v1", "v2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			routing := tc.routing // the one change: everything below takes it from here
			pool, _ := newOutboxDB(t, 2)
			ob, err := bus.NewOutbox(context.Background(), pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: routing})
			if err != nil {
				t.Fatal(err)
			}
			gc := newGoChannel(t)
			c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Routing: routing,
				Subscriber: gc, Group: "g", DeadLetter: gc, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Topics(); !slices.Equal(got, tc.topics) {
				t.Fatalf("consumer topics %q, want %q", got, tc.topics)
			}
			var got arrivals
			if err := c.OnAny(got.handler); err != nil {
				t.Fatal(err)
			}
			startConsumer(t, c)
			evs := routedEvents()
			publishThroughRelay(t, pool, ob, gc, evs)
			waitArrived(t, &got, routing, evs)
		})
	}
}

// Issue 10.4: the producer routes by aggregate type and the consumer is
// not told: on main the consumer kept its default topics (the wire names)
// and received nothing. A consumer given the Outbox now takes its routing.
func TestRoutingConsumerFollowsOutbox(t *testing.T) {
	t.Parallel()
	pool, _ := newOutboxDB(t, 2)
	ob, err := bus.NewOutbox(context.Background(), pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: bus.RouteByAggregateType("app.")})
	if err != nil {
		t.Fatal(err)
	}
	gc := newGoChannel(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "g",
		DeadLetter: gc, Pool: pool, Outbox: ob, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Topics(), []string{"app.lesson", "app.pulse", "app.user"}; !slices.Equal(got, want) {
		t.Fatalf("consumer topics %q, want the outbox's %q", got, want)
	}
	var got arrivals
	if err := c.OnAny(got.handler); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	evs := routedEvents()
	publishThroughRelay(t, pool, ob, gc, evs)
	waitArrived(t, &got, ob.Routing(), evs)
}

// Issue 10.4: a consumer configured so that it would miss events is
// refused, with an error saying why, instead of receiving nothing.
func TestRoutingDisagreementRefused(t *testing.T) {
	t.Parallel()
	pool, _ := newOutboxDB(t, 1)
	ctx := context.Background()
	byAggregate, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: bus.RouteByAggregateType("app.")})
	if err != nil {
		t.Fatal(err)
	}
	gc := newGoChannel(t)
	base := bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "g", DeadLetter: gc, Logger: testLogger()}
	for _, tc := range []struct {
		name string
		edit func(*bus.ConsumerConfig)
		want string
	}{
		{"RoutingDisagreesWithOutbox", func(c *bus.ConsumerConfig) {
			c.Outbox, c.Routing = byAggregate, bus.RouteByEventName()
		}, `sends edupulse.badge.awarded version 1 to topic "edupulse.badge.awarded", the Outbox's routing (by aggregate type (prefix "app.")) to "app.user"`},
		// The producer's topics listed by hand, the routing forgotten.
		{"TopicNotRouted", func(c *bus.ConsumerConfig) { c.Topics = []string{"app.pulse"} },
			`topic "app.pulse" in Topics receives no event of the registry under the routing by event name`},
		{"UnroutableType", func(c *bus.ConsumerConfig) {
			c.Routing = bus.RouteBy("nowhere", func(bus.EventType) string { return "" })
		}, "routing nowhere gives no topic for edupulse.badge.awarded version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			_, err := bus.NewConsumer(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewConsumer: %v, want an error saying %s", err, tc.want)
			}
		})
	}

	t.Run("SameRoutingAsOutbox", func(t *testing.T) {
		cfg := base
		cfg.Outbox, cfg.Routing = byAggregate, bus.RouteByAggregateType("app.") // another value, the same topics
		if _, err := bus.NewConsumer(cfg); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("TopicsListedOnce", func(t *testing.T) {
		cfg := base
		answered, created := gen.PulseAnswered{}.EventName(), gen.PulseCreated{}.EventName()
		cfg.Topics = []string{answered, created, answered}
		c, err := bus.NewConsumer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Topics(), []string{answered, created}; !slices.Equal(got, want) {
			t.Fatalf("consumer topics %q, want %q", got, want)
		}
	})

	// Topics narrowed so that a typed handler's events never arrive: Run
	// refuses to start.
	t.Run("HandlerTopicLeftOut", func(t *testing.T) {
		cfg := base
		cfg.Topics = []string{gen.PulseAnswered{}.EventName()}
		c, err := bus.NewConsumer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.On(c, func(context.Context, gen.PulseAnswered) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := bus.On(c, func(context.Context, gen.PulseCreated) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err = c.Run(runCtx)
		want := `the handler of edupulse.pulse.created version 1 would never run: the routing (by event name) sends it to topic "edupulse.pulse.created", which ConsumerConfig.Topics leaves out`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: %v, want an error saying %s", err, want)
		}
	})

	// A handler of version 2 also receives version 1 events, upcast. With a
	// routing that gives each version its own topic, Topics that list only
	// version 2's would lose every version 1 event still in flight: Run
	// refuses to start (issue 11: the check looked at the handler's own
	// version only).
	t.Run("UpcastSourceTopicLeftOut", func(t *testing.T) {
		perVersion := bus.RouteBy("by name and version", func(et bus.EventType) string {
			return fmt.Sprintf("%s.v%d", et.Name, et.Version)
		})
		cfg := base
		cfg.Routing = perVersion
		cfg.Topics = []string{"edupulse.pulse.answered.v2"}
		c, err := bus.NewConsumer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.On(c, func(context.Context, gen.PulseAnsweredV2) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err = c.Run(runCtx)
		want := `the handler of edupulse.pulse.answered version 2 would never receive version 1, which it takes upcast: the routing (by name and version) sends version 1 to topic "edupulse.pulse.answered.v1", which ConsumerConfig.Topics leaves out`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: %v, want an error saying %s", err, want)
		}

		// Both versions' topics listed: the consumer runs.
		cfg.Topics = []string{"edupulse.pulse.answered.v1", "edupulse.pulse.answered.v2"}
		if c, err = bus.NewConsumer(cfg); err != nil {
			t.Fatal(err)
		}
		if err := bus.On(c, func(context.Context, gen.PulseAnsweredV2) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runCtx2, cancel2 := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(runCtx2) }()
		select {
		case err := <-done:
			cancel2()
			t.Fatalf("Run with both versions' topics returned early: %v", err)
		case <-c.Running():
		}
		cancel2()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	})

	// An event type without an aggregate type cannot be routed by it: the
	// outbox refuses the routing when it is made, not at a Publish.
	t.Run("NoAggregateType", func(t *testing.T) {
		reg := bus.MustNewRegistry(bus.EventType{Name: "test.bare", Version: 1, GoType: "bare",
			Decode: func(bus.Envelope, []byte) (bus.Event, error) { return nil, errors.New("unused") }})
		_, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: reg, Routing: bus.RouteByAggregateType("app.")})
		want := `bus: outbox: routing by aggregate type (prefix "app.") gives no topic for test.bare version 1 (aggregate type "")`
		if err == nil || err.Error() != want {
			t.Fatalf("NewOutbox: %v, want %s", err, want)
		}
	})
}

func TestRoutingTopic(t *testing.T) {
	t.Parallel()
	reg := gen.Registry()
	for _, tc := range []struct {
		routing bus.Routing
		ev      bus.Event
		want    string
	}{
		{bus.Routing{}, gen.PulseAnswered{}, "edupulse.pulse.answered"},
		{bus.RouteByAggregateType("x_"), gen.PulseAnswered{}, "x_pulse"},
		{bus.RouteByAggregateType("x_"), gen.BadgeAwarded{}, "x_user"},
		{bus.RouteToTopic("all"), gen.LessonPublished{}, "all"},
	} {
		got, err := tc.routing.Topic(reg, tc.ev)
		if err != nil || got != tc.want {
			t.Errorf("%s: Topic(%s) = %q, %v; want %q", tc.routing, tc.ev.EventName(), got, err, tc.want)
		}
	}
	if _, err := bus.RouteByEventName().Topic(reg, newPingV1("not in gen")); !errors.Is(err, bus.ErrUnknownEvent) {
		t.Errorf("Topic of an unregistered event: %v, want ErrUnknownEvent", err)
	}
	// The versions of one name share its topic by default.
	topics, err := bus.Routing{}.Topics(pingRegistry)
	if err != nil || !slices.Equal(topics, []string{"test.ping"}) {
		t.Errorf("Topics(pingRegistry) = %q, %v; want [test.ping]", topics, err)
	}
}
