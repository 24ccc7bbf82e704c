package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Sentinel errors wrapped by *DecodeError; test for them with errors.Is.
var (
	// ErrUnknownEvent means a wire name that the registry does not hold.
	ErrUnknownEvent = errors.New("unknown event name")
	// ErrUnknownVersion means a known wire name with a version the registry
	// does not hold.
	ErrUnknownVersion = errors.New("unknown event version")
	// ErrMalformedPayload means a payload that does not decode into the
	// event's Go type.
	ErrMalformedPayload = errors.New("malformed event payload")
	// ErrMalformedEnvelope means metadata that is missing or unreadable: no
	// event name, a version or time that does not parse, an id that is not
	// a UUID.
	ErrMalformedEnvelope = errors.New("malformed event envelope")
)

// DecodeError reports why a message could not be turned into an Event.
type DecodeError struct {
	// MessageID is the Watermill message UUID.
	MessageID string
	// Name and Version are the event's wire name and version, as far as
	// they could be read.
	Name    string
	Version int
	// Err is one of the sentinel errors, possibly wrapping the cause.
	Err error
}

// Error implements error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode event %s (name %q, version %d): %v", e.MessageID, e.Name, e.Version, e.Err)
}

// Unwrap returns the underlying error.
func (e *DecodeError) Unwrap() error { return e.Err }

// EventType describes one event type to a Registry. Generated code builds
// the list for an events package; hand-written code rarely needs to.
type EventType struct {
	// Name is the stable wire name.
	Name string
	// Version is the payload version.
	Version int
	// AggregateType names the kind of aggregate the event belongs to.
	AggregateType string
	// GoType is the Go type's name, for messages.
	GoType string
	// Decode builds the typed event from its envelope and JSON payload. It
	// returns an error wrapping the decoder's error for a malformed payload.
	Decode func(env Envelope, payload []byte) (Event, error)
	// Upcast, when set, converts an event of this type into version
	// Version+1 of the same name, which must be registered too, keeping its
	// envelope. Consumers use it to hand events of this version to handlers
	// of later versions (see Registry.Upcast). Nil for the latest version
	// and for a retired one, whose events reach only its own handlers.
	Upcast func(ev Event) (Event, error)
}

type typeKey struct {
	name    string
	version int
}

// Registry maps wire names and versions to event types, and converts
// between Events and Watermill messages. It is immutable and safe for
// concurrent use.
type Registry struct {
	byKey map[typeKey]EventType
	types []EventType
}

// NewRegistry returns a registry of the given event types. It refuses an
// empty name, a version below 1, a missing Decode, a name and version
// registered twice, and an Upcast whose target version is not registered.
func NewRegistry(types ...EventType) (*Registry, error) {
	r := &Registry{byKey: make(map[typeKey]EventType, len(types))}
	var errs []error
	for _, t := range types {
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("event type %s: empty name", t.GoType))
			continue
		case t.Version < 1:
			errs = append(errs, fmt.Errorf("event type %s (%s): version %d, want at least 1", t.GoType, t.Name, t.Version))
			continue
		case t.Decode == nil:
			errs = append(errs, fmt.Errorf("event type %s (%s): nil Decode", t.GoType, t.Name))
			continue
		}
		k := typeKey{t.Name, t.Version}
		if prev, dup := r.byKey[k]; dup {
			errs = append(errs, fmt.Errorf("event %s version %d registered twice (%s and %s)", t.Name, t.Version, prev.GoType, t.GoType))
			continue
		}
		r.byKey[k] = t
		r.types = append(r.types, t)
	}
	errs = append(errs, r.checkUpcasters()...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bus: invalid registry: %w", err)
	}
	slices.SortFunc(r.types, func(a, b EventType) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return r, nil
}

// MustNewRegistry is NewRegistry that panics on error, for package-level
// registries built from generated code.
func MustNewRegistry(types ...EventType) *Registry {
	r, err := NewRegistry(types...)
	if err != nil {
		panic(err)
	}
	return r
}

// Types returns the registered event types ordered by name and version.
func (r *Registry) Types() []EventType { return slices.Clone(r.types) }

// Lookup returns the event type for a wire name and version.
func (r *Registry) Lookup(name string, version int) (EventType, bool) {
	t, ok := r.byKey[typeKey{name, version}]
	return t, ok
}

// Names returns the registered wire names, sorted and without duplicates.
func (r *Registry) Names() []string {
	var names []string
	for _, t := range r.types {
		if len(names) == 0 || names[len(names)-1] != t.Name {
			names = append(names, t.Name)
		}
	}
	return names
}

// NewMessage encodes an event as a Watermill message: the JSON payload, the
// event id as the message UUID and the envelope as metadata. The W3C
// traceparent of ctx's span, if any, is added to the metadata. An event
// whose name and version are not registered is refused.
func (r *Registry) NewMessage(ctx context.Context, ev Event) (*message.Message, error) {
	env, payload, fields, err := r.encodeEvent(ctx, ev)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(env.ID.String(), payload)
	for _, f := range fields {
		msg.Metadata[f.key] = f.value
	}
	return msg, nil
}

// EnvelopeOf reads the envelope and the wire name and version from a
// message's UUID and metadata.
func EnvelopeOf(msg *message.Message) (env Envelope, name string, version int, err error) {
	fail := func(format string, args ...any) (Envelope, string, int, error) {
		return Envelope{}, name, version, &DecodeError{MessageID: msg.UUID, Name: name, Version: version,
			Err: fmt.Errorf("%w: %s", ErrMalformedEnvelope, fmt.Sprintf(format, args...))}
	}
	name = msg.Metadata.Get(MetadataName)
	if name == "" {
		return fail("no %s metadata", MetadataName)
	}
	v, convErr := strconv.Atoi(msg.Metadata.Get(MetadataVersion))
	if convErr != nil {
		return fail("%s %q is not a number", MetadataVersion, msg.Metadata.Get(MetadataVersion))
	}
	version = v
	id, parseErr := uuid.Parse(msg.UUID)
	if parseErr != nil {
		return fail("message uuid %q: %v", msg.UUID, parseErr)
	}
	env = Envelope{
		ID:            id,
		AggregateID:   msg.Metadata.Get(MetadataAggregateID),
		AggregateType: msg.Metadata.Get(MetadataAggregateType),
		TraceParent:   msg.Metadata.Get(MetadataTraceParent),
	}
	if s := msg.Metadata.Get(MetadataOccurredAt); s != "" {
		t, timeErr := time.Parse(time.RFC3339Nano, s)
		if timeErr != nil {
			return fail("%s %q: %v", MetadataOccurredAt, s, timeErr)
		}
		env.OccurredAt = t
	}
	return env, name, version, nil
}

// Decode turns a Watermill message back into its typed event. The error is
// a *DecodeError wrapping ErrUnknownEvent, ErrUnknownVersion,
// ErrMalformedEnvelope or ErrMalformedPayload.
func (r *Registry) Decode(msg *message.Message) (Event, error) {
	env, name, version, err := EnvelopeOf(msg)
	if err != nil {
		return nil, err
	}
	t, ok := r.Lookup(name, version)
	if !ok {
		sentinel := ErrUnknownEvent
		for _, known := range r.types {
			if known.Name == name {
				sentinel = ErrUnknownVersion
				break
			}
		}
		return nil, &DecodeError{MessageID: msg.UUID, Name: name, Version: version, Err: sentinel}
	}
	ev, err := t.Decode(env, msg.Payload)
	if err != nil {
		return nil, &DecodeError{MessageID: msg.UUID, Name: name, Version: version, Err: fmt.Errorf("%w: %w", ErrMalformedPayload, err)}
	}
	return ev, nil
}
