package bus

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// rowEvent is an event whose envelope and payload a test chooses.
type rowEvent struct {
	env     Envelope
	Payload string `json:"payload"`
}

func (rowEvent) EventName() string    { return "test.row" }
func (rowEvent) EventVersion() int    { return 1 }
func (e rowEvent) Envelope() Envelope { return e.env }

// Publish writes the bytes it wrote when it built a Watermill message
// (Registry.NewMessage) and encoded its metadata and forwarder envelope
// with encoding/json; encodeRow and wrapForForwarder build them by hand,
// for any aggregate, payload, topic and trace context.
func TestEncodeRowIsWatermillsEnvelope(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry(EventType{Name: "test.row", Version: 1, GoType: "rowEvent",
		Decode: func(Envelope, []byte) (Event, error) { return rowEvent{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	traced := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled,
	}))
	odd := []string{"", "plain", `quote " and \ backslash`, "<html> & more", "tab\tnew\nline\x01", "é ü 日本", "\u2028\u2029", "bad utf8 \xff\xfe", "emoji 🎉"}
	for _, ctx := range []context.Context{context.Background(), traced} {
		for _, s := range odd {
			for _, topic := range []string{"edupulse.pulse.answered", s} {
				ev := rowEvent{env: Envelope{ID: uuid.New(), AggregateID: s, AggregateType: s,
					OccurredAt: time.Date(2026, 12, 2, 8, 0, 0, 123456789, time.FixedZone("X", 3600))}, Payload: s}
				msg, err := reg.NewMessage(ctx, ev)
				if err != nil {
					t.Fatal(err)
				}
				wantMeta, err := json.Marshal(msg.Metadata)
				if err != nil {
					t.Fatal(err)
				}
				// The envelope as encoding/json writes it, Watermill's format.
				wantWrapped, err := json.Marshal(struct {
					DestinationTopic string          `json:"destination_topic"`
					UUID             string          `json:"uuid"`
					Payload          []byte          `json:"payload"`
					Metadata         json.RawMessage `json:"metadata"`
				}{topic, msg.UUID, msg.Payload, wantMeta})
				if err != nil {
					t.Fatal(err)
				}
				row, err := reg.encodeRow(ctx, ev, topic)
				if err != nil {
					t.Fatal(err)
				}
				if row.id != msg.UUID || string(row.metadata) != string(wantMeta) || string(row.wrapped) != string(wantWrapped) {
					t.Fatalf("%q, topic %q:\n got %s %s\n     %s\nwant %s %s\n     %s", s, topic,
						row.id, row.metadata, row.wrapped, msg.UUID, wantMeta, wantWrapped)
				}
				if ctx == traced && !strings.Contains(string(row.metadata), `"traceparent":"00-01020300`) {
					t.Fatalf("no traceparent in %s", row.metadata)
				}
			}
		}
	}
	if _, err := reg.encodeRow(context.Background(), rowEvent{}, "t"); err == nil {
		t.Fatal("an event without an id was encoded")
	}
}

// appendJSONString writes what encoding/json writes for any string.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a", `"`, `\`, "<>&", "\x00\x1f\x7f", "é", "\xff", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("appendJSONString(%q) = %s, want x%s", s, got, want)
		}
	})
}
