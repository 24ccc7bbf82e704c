package bus

import (
	"time"

	"github.com/google/uuid"
)

// Event is a typed domain event together with its envelope.
//
// Event types are not written by hand: they are declared as plain structs in
// an events package and the eventgen generator emits, for each of them, a
// wrapper type implementing Event (see the gen package of this module for
// the EduPulse events). EventName and EventVersion must not depend on the
// receiver's contents, so that generic code can read them from a zero value,
// as in (*new(T)).EventName().
type Event interface {
	// EventName is the stable wire name, such as "edupulse.pulse.created".
	EventName() string
	// EventVersion is the version of the payload schema, starting at 1.
	EventVersion() int
	// Envelope returns the event's identity and bookkeeping.
	Envelope() Envelope
}

// Envelope is the bookkeeping every event carries besides its payload. It
// travels as Watermill message metadata, never inside the payload.
type Envelope struct {
	// ID identifies the event end to end: it is the Watermill message UUID in
	// the outbox, on the broker and in a consumer's inbox. Generated
	// constructors fill it with a time-ordered UUIDv7.
	ID uuid.UUID
	// AggregateID identifies the aggregate the event belongs to; events of
	// one aggregate are delivered in the order they were committed.
	AggregateID string
	// AggregateType names the kind of aggregate, such as "pulse".
	AggregateType string
	// OccurredAt is when the event happened, in UTC.
	OccurredAt time.Time
	// TraceParent is the W3C traceparent of the context the event was
	// published from, when there was one. Set on events read back from a
	// broker or the outbox; ignored when publishing (the publishing
	// context's span is used instead).
	TraceParent string
}

// NewEnvelope returns an envelope with a fresh UUIDv7 id and the current
// time, for the given aggregate. Generated constructors call it.
func NewEnvelope(aggregateType, aggregateID string) Envelope {
	return Envelope{
		ID:            uuid.Must(uuid.NewV7()),
		AggregateID:   aggregateID,
		AggregateType: aggregateType,
		OccurredAt:    time.Now().UTC(),
	}
}

// Metadata keys under which the envelope travels with every message.
const (
	// MetadataName holds the event's wire name.
	MetadataName = "event_name"
	// MetadataVersion holds the event's payload version, in decimal.
	MetadataVersion = "event_version"
	// MetadataAggregateID holds the aggregate id; brokers with a partition or
	// routing key use it as that key.
	MetadataAggregateID = "aggregate_id"
	// MetadataAggregateType holds the aggregate type.
	MetadataAggregateType = "aggregate_type"
	// MetadataOccurredAt holds the event time, RFC 3339 with nanoseconds.
	MetadataOccurredAt = "occurred_at"
	// MetadataTraceParent holds the W3C traceparent of the producer's span.
	MetadataTraceParent = "traceparent"
)
