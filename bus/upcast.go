package bus

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Upcasting: converting an event of version n into version n+1 of the same
// wire name, and on along the chain, so that handlers of a later version
// also receive events published with an earlier one. The conversions are
// typed Go functions declared next to the events (//eventbus:upcast) and
// registered by generated code as EventType.Upcast; this file is the
// generic runtime side.

// Upcast converts ev to the given version of its wire name by applying the
// registered upcasters in turn (version n to n+1, then n+1 to n+2, ...). An
// event already at that version is returned as is. The converted event
// keeps ev's envelope: its id, aggregate, time and trace parent.
//
// The error wraps ErrUnknownEvent when ev's name and version are not
// registered, and ErrUnknownVersion when the target version is not
// registered, is below ev's version (events are never downcast), or cannot
// be reached because a version on the way has no upcaster (it is retired).
// An error returned by an upcaster is wrapped as is.
func (r *Registry) Upcast(ev Event, version int) (Event, error) {
	if ev == nil {
		return nil, fmt.Errorf("bus: upcast: nil event")
	}
	name, from := ev.EventName(), ev.EventVersion()
	if _, ok := r.Lookup(name, from); !ok {
		return nil, fmt.Errorf("bus: upcast %s version %d: %w", name, from, ErrUnknownEvent)
	}
	if _, ok := r.Lookup(name, version); !ok {
		return nil, fmt.Errorf("bus: upcast %s to version %d: %w", name, version, ErrUnknownVersion)
	}
	if version < from {
		return nil, fmt.Errorf("bus: upcast %s version %d to version %d: events are never downcast: %w", name, from, version, ErrUnknownVersion)
	}
	for v := from; v < version; v++ {
		t, _ := r.Lookup(name, v)
		if t.Upcast == nil {
			return nil, fmt.Errorf("bus: upcast %s version %d to version %d: version %d has no upcaster: %w", name, from, version, v, ErrUnknownVersion)
		}
		next, err := t.Upcast(ev)
		if err != nil {
			return nil, fmt.Errorf("bus: upcast %s %s from version %d to %d: %w", name, ev.Envelope().ID, v, v+1, err)
		}
		if next == nil || next.EventName() != name || next.EventVersion() != v+1 {
			return nil, fmt.Errorf("bus: upcast %s from version %d: the upcaster of %s returned %s, want version %d",
				name, v, t.GoType, describeEvent(next), v+1)
		}
		ev = next
	}
	return ev, nil
}

// UpcastLatest converts ev to the latest registered version of its wire
// name, as Upcast does.
func (r *Registry) UpcastLatest(ev Event) (Event, error) {
	if ev == nil {
		return nil, fmt.Errorf("bus: upcast: nil event")
	}
	latest, ok := r.Latest(ev.EventName())
	if !ok {
		return nil, fmt.Errorf("bus: upcast %s: %w", ev.EventName(), ErrUnknownEvent)
	}
	return r.Upcast(ev, latest)
}

// Latest returns the highest registered version of a wire name.
func (r *Registry) Latest(name string) (version int, ok bool) {
	for _, t := range r.types {
		if t.Name == name {
			version, ok = t.Version, true // types are ordered by name and version
		}
	}
	return version, ok
}

// UpcastTargets returns the versions an event of the given name and version
// can be upcast to, in increasing order: the following versions, as long as
// each one on the way has an upcaster.
func (r *Registry) UpcastTargets(name string, version int) []int {
	var out []int
	for v := version; ; v++ {
		t, ok := r.Lookup(name, v)
		if !ok || t.Upcast == nil {
			return out
		}
		out = append(out, v+1)
	}
}

// checkUpcasters refuses an upcaster whose target version is not
// registered; NewRegistry calls it.
func (r *Registry) checkUpcasters() []error {
	var errs []error
	for _, t := range r.types {
		if t.Upcast == nil {
			continue
		}
		if _, ok := r.Lookup(t.Name, t.Version+1); !ok {
			errs = append(errs, fmt.Errorf("event type %s (%s version %d) has an upcaster but version %d is not registered",
				t.GoType, t.Name, t.Version, t.Version+1))
		}
	}
	return errs
}

func describeEvent(ev Event) string {
	if ev == nil {
		return "nil"
	}
	return fmt.Sprintf("%T (%s version %d)", ev, ev.EventName(), ev.EventVersion())
}

// resolveRoutes returns, for each registered event type, the handlers a
// message of that type goes to: the typed handlers of its own version,
// those of every later version it can be upcast to (each handed the event
// converted to its version), and the OnAny handlers (handed the event as
// decoded). It also returns, by wire name, the versions with typed
// handlers. Run calls it with c.mu held, once the handlers are fixed.
func (c *Consumer) resolveRoutes() (map[typeKey]route, map[string][]int) {
	reg := c.cfg.Registry
	routes := make(map[typeKey]route)
	versions := make(map[string][]int)
	for _, t := range reg.Types() {
		k := typeKey{t.Name, t.Version}
		rt := route{plain: slices.Clone(c.plain[k]), tx: slices.Clone(c.tx[k])}
		for _, v := range reg.UpcastTargets(t.Name, t.Version) {
			target := typeKey{t.Name, v}
			for _, h := range c.plain[target] {
				rt.plain = append(rt.plain, upcastPlain(reg, v, h))
			}
			for _, h := range c.tx[target] {
				rt.tx = append(rt.tx, upcastTx(reg, v, h))
			}
		}
		rt.plain = append(rt.plain, c.plain[typeKey{}]...)
		rt.tx = append(rt.tx, c.tx[typeKey{}]...)
		routes[k] = rt
		if len(c.plain[k])+len(c.tx[k]) > 0 {
			versions[t.Name] = append(versions[t.Name], t.Version)
		}
	}
	return routes, versions
}

// upcastPlain wraps a handler of the given version to receive events of an
// earlier one, converted. A failed conversion is permanent: the same
// payload would fail the same way again.
func upcastPlain(reg *Registry, version int, h handlerFunc) handlerFunc {
	return func(ctx context.Context, ev Event) error {
		up, err := reg.Upcast(ev, version)
		if err != nil {
			return Permanent(err)
		}
		return h(ctx, up)
	}
}

func upcastTx(reg *Registry, version int, h txHandlerFunc) txHandlerFunc {
	return func(ctx context.Context, tx pgx.Tx, ev Event) ([]Event, error) {
		up, err := reg.Upcast(ev, version)
		if err != nil {
			return nil, Permanent(err)
		}
		return h(ctx, tx, up)
	}
}
