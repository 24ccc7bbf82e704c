package bus

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Routing decides on which broker topic each event travels. It is the one
// definition producers and consumers share: the Outbox publishes with it
// (OutboxConfig.Routing) and a Consumer subscribes to the topics it gives
// for the registry's event types (ConsumerConfig.Routing, or its Outbox's
// routing), so the two cannot disagree. Declare it once, beside the
// registry, and pass the same value to both:
//
//	var routing = bus.RouteByAggregateType("edupulse.")
//	outbox, _ := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: routing})
//	c, _ := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Routing: routing, ...})
//
// A Routing routes event types, not single events: an event's topic
// depends only on its registered name, version and aggregate type
// (EventType), which is what lets a consumer list every topic its events
// can arrive on before any arrives.
//
// The zero Routing routes by event name, like RouteByEventName.
type Routing struct {
	desc  string
	topic func(EventType) string
}

// RouteByEventName routes each event to a topic named after its wire name,
// such as "edupulse.pulse.created"; the versions of one name share it. It
// is the default.
func RouteByEventName() Routing {
	return Routing{desc: "by event name", topic: func(t EventType) string { return t.Name }}
}

// RouteByAggregateType routes events to one topic per aggregate type,
// prefix + aggregate type, such as "edupulse.pulse", so that a consumer
// sees the events of one aggregate, whatever their names, in one topic. An
// event type registered without an aggregate type cannot be routed.
func RouteByAggregateType(prefix string) Routing {
	return Routing{
		desc: fmt.Sprintf("by aggregate type (prefix %q)", prefix),
		topic: func(t EventType) string {
			if t.AggregateType == "" {
				return ""
			}
			return prefix + t.AggregateType
		},
	}
}

// RouteToTopic routes every event to one topic.
func RouteToTopic(topic string) Routing {
	return Routing{desc: fmt.Sprintf("to topic %q", topic), topic: func(EventType) string { return topic }}
}

// RouteBy returns a Routing of your own: fn gives the topic of an event
// type, or "" for a type it cannot route. fn must be a pure function of
// its argument: producers and consumers call it separately and must get
// the same answer. desc describes the routing in errors.
func RouteBy(desc string, fn func(EventType) string) Routing {
	if fn == nil {
		return Routing{desc: desc, topic: func(EventType) string { return "" }}
	}
	return Routing{desc: desc, topic: fn}
}

// String describes the routing, such as "by event name".
func (r Routing) String() string {
	if r.topic == nil {
		return "by event name"
	}
	return r.desc
}

// isZero reports whether r is the zero Routing, which a ConsumerConfig
// reads as "unset".
func (r Routing) isZero() bool { return r.topic == nil }

// TopicOf returns the topic of events of type t. It fails when the routing
// gives no topic for t.
func (r Routing) TopicOf(t EventType) (string, error) {
	var topic string
	if r.topic == nil {
		topic = t.Name
	} else {
		topic = r.topic(t)
	}
	if topic == "" {
		return "", fmt.Errorf("routing %s gives no topic for %s version %d (aggregate type %q)", r, t.Name, t.Version, t.AggregateType)
	}
	return topic, nil
}

// Topic returns the topic of ev, an event of the registry (a zero value of
// the event's type will do: only its name and version are read).
func (r Routing) Topic(reg *Registry, ev Event) (string, error) {
	t, ok := reg.Lookup(ev.EventName(), ev.EventVersion())
	if !ok {
		return "", fmt.Errorf("bus: route %T: %w: %s version %d is not registered", ev, ErrUnknownEvent, ev.EventName(), ev.EventVersion())
	}
	topic, err := r.TopicOf(t)
	if err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
	return topic, nil
}

// Topics returns every topic the routing gives the registry's event types,
// sorted and without duplicates: the topics a consumer of all of them
// subscribes to. It fails when an event type has no topic.
func (r Routing) Topics(reg *Registry) ([]string, error) {
	table, err := r.table(reg)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	return topicSet(table), nil
}

// table returns the topic of every event type of reg.
func (r Routing) table(reg *Registry) (map[typeKey]string, error) {
	table := make(map[typeKey]string, len(reg.types))
	var errs []error
	for _, t := range reg.types {
		topic, err := r.TopicOf(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		table[typeKey{t.Name, t.Version}] = topic
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return table, nil
}

func topicSet(table map[typeKey]string) []string {
	return slices.Compact(slices.Sorted(maps.Values(table)))
}

// Routing returns the routing the outbox publishes with.
func (o *Outbox) Routing() Routing { return o.routing }

// consumerRouting returns the routing a consumer with this configuration
// subscribes by: Routing, else its Outbox's, else by event name.
func (c ConsumerConfig) consumerRouting() Routing {
	if c.Routing.isZero() && c.Outbox != nil {
		return c.Outbox.Routing()
	}
	return c.Routing
}

// validateRouting reports a routing that cannot route every event type of
// the registry, a Routing that disagrees with the Outbox's, and Topics the
// routing never sends an event to.
func (c ConsumerConfig) validateRouting() error {
	if c.Registry == nil {
		return nil
	}
	routing := c.consumerRouting()
	table, err := routing.table(c.Registry)
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	var errs []error
	if c.Outbox != nil && !c.Routing.isZero() {
		// Both set: they must agree on every event type both registries
		// hold, or the events this consumer's handlers publish, and those
		// its producers publish, would go where it does not read.
		for _, t := range c.Registry.types {
			if _, ok := c.Outbox.Registry().Lookup(t.Name, t.Version); !ok {
				continue
			}
			theirs, err := c.Outbox.Routing().TopicOf(t)
			if err != nil {
				errs = append(errs, fmt.Errorf("Outbox's routing: %w", err))
				continue
			}
			if ours := table[typeKey{t.Name, t.Version}]; ours != theirs {
				errs = append(errs, fmt.Errorf("Routing (%s) sends %s version %d to topic %q, the Outbox's routing (%s) to %q: give both the same bus.Routing, or leave ConsumerConfig.Routing unset to use the Outbox's",
					routing, t.Name, t.Version, ours, c.Outbox.Routing(), theirs))
			}
		}
	}
	all := topicSet(table)
	for _, topic := range c.Topics {
		if _, found := slices.BinarySearch(all, topic); !found {
			errs = append(errs, fmt.Errorf("topic %q in Topics receives no event of the registry under the routing %s (its topics: %s)",
				topic, routing, strings.Join(all, ", ")))
		}
	}
	return errors.Join(errs...)
}

// setRoutingDefaults resolves the consumer's routing and, unless Topics
// narrows it, subscribes to every topic of the registry's event types.
// Topics are sorted and listed once (a topic subscribed twice would be a
// second handler of the same name). The configuration has been validated.
func (c *ConsumerConfig) setRoutingDefaults() {
	c.Routing = c.consumerRouting()
	if len(c.Topics) == 0 && c.Registry != nil {
		c.Topics, _ = c.Routing.Topics(c.Registry)
		return
	}
	c.Topics = slices.Compact(slices.Sorted(slices.Values(c.Topics)))
}

// Topics returns the topics the consumer subscribes to.
func (c *Consumer) Topics() []string { return slices.Clone(c.cfg.Topics) }

// checkHandlerTopics refuses typed handlers that could never run, or would
// miss events they take: their event type, or an earlier version of it
// that they receive upcast, is routed to a topic the consumer does not
// subscribe to (ConsumerConfig.Topics leaves it out). Called by Run, once
// the handlers are fixed.
func (c *Consumer) checkHandlerTopics() error {
	reg := c.cfg.Registry
	handled := func(name string, version int) bool {
		k := typeKey{name, version}
		return len(c.plain[k])+len(c.tx[k]) > 0
	}
	var errs []error
	for _, t := range reg.types {
		topic, err := c.cfg.Routing.TopicOf(t)
		if err != nil {
			errs = append(errs, err) // validated already; kept for safety
			continue
		}
		if slices.Contains(c.cfg.Topics, topic) {
			continue
		}
		if handled(t.Name, t.Version) {
			errs = append(errs, fmt.Errorf("the handler of %s version %d would never run: the routing (%s) sends it to topic %q, which ConsumerConfig.Topics leaves out",
				t.Name, t.Version, c.cfg.Routing, topic))
		}
		// The later versions' handlers that take t upcast (as resolveRoutes
		// routes it) would miss it too.
		for _, v := range reg.UpcastTargets(t.Name, t.Version) {
			if handled(t.Name, v) {
				errs = append(errs, fmt.Errorf("the handler of %s version %d would never receive version %d, which it takes upcast: the routing (%s) sends version %d to topic %q, which ConsumerConfig.Topics leaves out",
					t.Name, v, t.Version, c.cfg.Routing, t.Version, topic))
			}
		}
	}
	return errors.Join(errs...)
}
