package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
)

// outboxRow is what Publish writes for one event: the message id, the
// forwarder envelope (the row's payload) and the metadata as JSON.
type outboxRow struct {
	id                string
	wrapped, metadata []byte
}

// encodeEvent checks ev (registered, with an id) and returns its envelope,
// its JSON payload and its metadata, the trace context of ctx included, in
// no particular order: what Registry.NewMessage and encodeRow both write.
func (r *Registry) encodeEvent(ctx context.Context, ev Event) (Envelope, []byte, metadataFields, error) {
	if ev == nil {
		return Envelope{}, nil, nil, errors.New("bus: nil event")
	}
	if _, ok := r.Lookup(ev.EventName(), ev.EventVersion()); !ok {
		return Envelope{}, nil, nil, fmt.Errorf("bus: encode %T: %w: %s version %d is not registered", ev, ErrUnknownEvent, ev.EventName(), ev.EventVersion())
	}
	env := ev.Envelope()
	if env.ID == uuid.Nil {
		return Envelope{}, nil, nil, fmt.Errorf("bus: encode %s: event has no id (build events with their generated constructors)", ev.EventName())
	}
	var payload []byte
	var err error
	if m, ok := ev.(json.Marshaler); ok {
		// Generated events marshal their payload themselves; calling it
		// directly spares encoding/json's check and compaction of the
		// result (the payload is then taken as the valid JSON it is).
		payload, err = m.MarshalJSON()
	} else {
		payload, err = json.Marshal(ev)
	}
	if err != nil {
		return Envelope{}, nil, nil, fmt.Errorf("bus: encode %s %s: %w", ev.EventName(), env.ID, err)
	}
	fields := make(metadataFields, 0, 7)
	fields = append(fields,
		metadataField{MetadataName, ev.EventName()},
		metadataField{MetadataVersion, strconv.Itoa(ev.EventVersion())},
		metadataField{MetadataAggregateID, env.AggregateID},
		metadataField{MetadataOccurredAt, env.OccurredAt.UTC().Format(time.RFC3339Nano)})
	if env.AggregateType != "" {
		fields = append(fields, metadataField{MetadataAggregateType, env.AggregateType})
	}
	propagation.TraceContext{}.Inject(ctx, &fields)
	return env, payload, fields, nil
}

// encodeRow encodes ev for the outbox, addressed to topic: the bytes
// encoding/json writes for Registry.NewMessage's metadata and for its
// forwarder envelope (a test compares them), without building that
// message, its metadata map, or the envelope through reflection. Publish
// spent half of its Go time there.
func (r *Registry) encodeRow(ctx context.Context, ev Event, topic string) (outboxRow, error) {
	env, payload, fields, err := r.encodeEvent(ctx, ev)
	if err != nil {
		return outboxRow{}, err
	}
	id := env.ID.String()
	// json.Marshal writes a map's keys sorted.
	slices.SortFunc(fields, func(a, b metadataField) int { return strings.Compare(a.key, b.key) })
	metadata := make([]byte, 0, 192)
	metadata = append(metadata, '{')
	for i, f := range fields {
		if i > 0 {
			metadata = append(metadata, ',')
		}
		metadata = appendJSONString(metadata, f.key)
		metadata = append(metadata, ':')
		metadata = appendJSONString(metadata, f.value)
	}
	metadata = append(metadata, '}')

	return outboxRow{id: id, wrapped: wrapForForwarder(topic, id, payload, metadata), metadata: metadata}, nil
}

// metadataField is one metadata entry of an outbox row.
type metadataField struct{ key, value string }

// metadataFields is an event's metadata while encodeRow builds it; it is
// the carrier the trace context is injected into.
type metadataFields []metadataField

// Get implements propagation.TextMapCarrier.
func (m *metadataFields) Get(key string) string {
	for _, f := range *m {
		if f.key == key {
			return f.value
		}
	}
	return ""
}

// Set implements propagation.TextMapCarrier.
func (m *metadataFields) Set(key, value string) {
	for i, f := range *m {
		if f.key == key {
			(*m)[i].value = value
			return
		}
	}
	*m = append(*m, metadataField{key, value})
}

// Keys implements propagation.TextMapCarrier.
func (m *metadataFields) Keys() []string {
	keys := make([]string, len(*m))
	for i, f := range *m {
		keys[i] = f.key
	}
	return keys
}

// appendJSONString appends s as encoding/json writes a string: bytes that
// need no escaping (printable ASCII but ", \, <, > and &, which
// encoding/json escapes for HTML) are copied; any other string is left to
// encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
