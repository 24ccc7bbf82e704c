package gen_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/events"
	"github.com/edupulse/eventbus/gen"
)

var (
	pulseID   = uuid.MustParse("0190c0de-0000-7000-8000-000000000001")
	authorID  = uuid.MustParse("0190c0de-0000-7000-8000-000000000002")
	answerID  = uuid.MustParse("0190c0de-0000-7000-8000-000000000003")
	studentID = uuid.MustParse("0190c0de-0000-7000-8000-000000000004")
	badgeID   = uuid.MustParse("0190c0de-0000-7000-8000-000000000005")
	lessonID  = uuid.MustParse("0190c0de-0000-7000-8000-000000000006")
	at        = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
)

// sample is one event of each type, built with its constructor, with the
// aggregate id and type the constructor must have set.
type sample struct {
	ev            gen.Event
	kind          gen.Kind
	aggregateID   string
	aggregateType string
}

func samples() []sample {
	return []sample{
		{gen.NewBadgeAwarded(badgeID, studentID, "first answer", at), gen.KindBadgeAwarded, studentID.String(), "user"},
		{gen.NewLessonPublished(lessonID, authorID, "Fractions", at), gen.KindLessonPublished, lessonID.String(), "lesson"},
		{gen.NewPulseAnswered(pulseID, answerID, studentID, at), gen.KindPulseAnswered, pulseID.String(), "pulse"},
		{gen.NewPulseAnsweredV2(pulseID, answerID, studentID, false, at), gen.KindPulseAnsweredV2, pulseID.String(), "pulse"},
		{gen.NewPulseCreated(pulseID, authorID, "How much is 3/4 of 12?", at), gen.KindPulseCreated, pulseID.String(), "pulse"},
	}
}

func TestConstructorsFillEnvelope(t *testing.T) {
	t.Parallel()
	before := time.Now().UTC()
	for _, s := range samples() {
		env := s.ev.Envelope()
		if env.ID == uuid.Nil || env.ID.Version() != 7 {
			t.Errorf("%s: id %s, want a UUIDv7", s.ev.EventName(), env.ID)
		}
		if env.AggregateID != s.aggregateID || env.AggregateType != s.aggregateType {
			t.Errorf("%s: aggregate %s/%s, want %s/%s", s.ev.EventName(), env.AggregateType, env.AggregateID, s.aggregateType, s.aggregateID)
		}
		if env.OccurredAt.Location() != time.UTC || env.OccurredAt.Before(before.Add(-time.Second)) {
			t.Errorf("%s: occurred at %v, want about now, in UTC", s.ev.EventName(), env.OccurredAt)
		}
		if s.ev.Kind() != s.kind {
			t.Errorf("%s: Kind() = %v, want %v", s.ev.EventName(), s.ev.Kind(), s.kind)
		}
	}
	e := gen.NewPulseCreated(pulseID, authorID, "title", at)
	want := events.PulseCreated{PulseID: pulseID, AuthorID: authorID, Title: "title", PublishedAt: at}
	if diff := cmp.Diff(want, e.PulseCreated); diff != "" {
		t.Errorf("NewPulseCreated payload (-want +got):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := gen.Registry()
	for _, s := range samples() {
		t.Run(s.ev.EventName(), func(t *testing.T) {
			msg, err := reg.NewMessage(ctx, s.ev)
			if err != nil {
				t.Fatalf("NewMessage: %v", err)
			}
			if msg.UUID != s.ev.Envelope().ID.String() {
				t.Errorf("message uuid %s, want the event id %s", msg.UUID, s.ev.Envelope().ID)
			}
			if got := msg.Metadata.Get(bus.MetadataAggregateID); got != s.aggregateID {
				t.Errorf("aggregate_id metadata %q, want %q", got, s.aggregateID)
			}
			// Copy keeps only what travels: UUID, metadata and payload.
			got, err := reg.Decode(msg.Copy())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(s.ev.Envelope(), got.Envelope()); diff != "" {
				t.Errorf("envelope (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(payloadOf(s.ev), payloadOf(got)); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
			gev, ok := got.(gen.Event)
			if !ok || gev.Kind() != s.kind {
				t.Errorf("decoded %T, want a gen.Event of kind %v", got, s.kind)
			}
		})
	}
}

// payloadOf returns the events struct inside a wrapper.
func payloadOf(ev bus.Event) any {
	switch e := ev.(type) {
	case gen.BadgeAwarded:
		return e.BadgeAwarded
	case gen.LessonPublished:
		return e.LessonPublished
	case gen.PulseAnswered:
		return e.PulseAnswered
	case gen.PulseAnsweredV2:
		return e.PulseAnsweredV2
	case gen.PulseCreated:
		return e.PulseCreated
	}
	return ev
}

// recorder records which method handled which event.
type recorder struct{ calls []string }

func (r *recorder) HandleBadgeAwarded(_ context.Context, e gen.BadgeAwarded) error {
	r.calls = append(r.calls, "BadgeAwarded "+e.BadgeID.String())
	return nil
}

func (r *recorder) HandleLessonPublished(_ context.Context, e gen.LessonPublished) error {
	r.calls = append(r.calls, "LessonPublished "+e.LessonID.String())
	return nil
}

func (r *recorder) HandlePulseAnsweredV2(_ context.Context, e gen.PulseAnsweredV2) error {
	r.calls = append(r.calls, fmt.Sprintf("PulseAnsweredV2 %s correct=%v", e.AnswerID, e.Correct))
	return nil
}

func (r *recorder) HandlePulseCreated(_ context.Context, e gen.PulseCreated) error {
	r.calls = append(r.calls, "PulseCreated "+e.PulseID.String())
	return nil
}

var _ gen.Handler = (*recorder)(nil)

func TestDispatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := &recorder{}
	for _, s := range samples() {
		if err := gen.Dispatch(ctx, r, s.ev); err != nil {
			t.Fatalf("Dispatch(%s): %v", s.ev.EventName(), err)
		}
	}
	want := []string{
		"BadgeAwarded " + badgeID.String(),
		"LessonPublished " + lessonID.String(),
		"PulseAnsweredV2 " + answerID.String() + " correct=true", // version 1, upcast: answered before grading
		"PulseAnsweredV2 " + answerID.String() + " correct=false",
		"PulseCreated " + pulseID.String(),
	}
	if diff := cmp.Diff(want, r.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}

	var partial struct{ gen.UnhandledEvents }
	for _, s := range samples() {
		if err := gen.Dispatch(ctx, partial, s.ev); err != nil {
			t.Errorf("Dispatch(%s) to UnhandledEvents: %v", s.ev.EventName(), err)
		}
	}
	if err := gen.Dispatch(ctx, r, foreignEvent{}); !errors.Is(err, bus.ErrUnknownEvent) {
		t.Errorf("Dispatch(foreign event) = %v, want ErrUnknownEvent", err)
	}
}

// foreignEvent is a bus.Event that package gen does not know.
type foreignEvent struct{}

func (foreignEvent) EventName() string            { return "other.thing.happened" }
func (foreignEvent) EventVersion() int            { return 1 }
func (foreignEvent) Envelope() bus.Envelope       { return bus.NewEnvelope("thing", "1") }
func (foreignEvent) MarshalJSON() ([]byte, error) { return []byte("{}"), nil }

func TestKinds(t *testing.T) {
	t.Parallel()
	kinds := gen.AllKinds()
	if len(kinds) != len(samples()) {
		t.Fatalf("AllKinds() has %d kinds, want %d", len(kinds), len(samples()))
	}
	types := gen.Registry().Types()
	for i, k := range kinds {
		if !k.Valid() {
			t.Errorf("%v.Valid() = false", k)
		}
		want := types[i].Name
		if types[i].Version > 1 {
			want += fmt.Sprintf("@v%d", types[i].Version)
		}
		if k.String() != want {
			t.Errorf("AllKinds()[%d] = %v, want %s (wire-name and version order)", i, k, want)
		}
		got, err := gen.ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	for _, k := range []gen.Kind{0, gen.Kind(len(kinds) + 1)} {
		if k.Valid() {
			t.Errorf("Kind(%d).Valid() = true", k)
		}
		if want := fmt.Sprintf("Kind(%d)", k); k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), want)
		}
	}
	if _, err := gen.ParseKind("edupulse.nope"); !errors.Is(err, bus.ErrUnknownEvent) {
		t.Errorf("ParseKind(unknown) error = %v, want ErrUnknownEvent", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	valid, err := gen.Registry().NewMessage(context.Background(), gen.NewPulseCreated(pulseID, authorID, "t", at))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(m *message.Message)
		want    error
		wantErr string
	}{
		{"unknown name", func(m *message.Message) { m.Metadata.Set(bus.MetadataName, "edupulse.pulse.deleted") }, bus.ErrUnknownEvent, "edupulse.pulse.deleted"},
		{"unknown version", func(m *message.Message) { m.Metadata.Set(bus.MetadataVersion, "9") }, bus.ErrUnknownVersion, "version 9"},
		{"malformed payload", func(m *message.Message) { m.Payload = []byte(`{"pulse_id": 12`) }, bus.ErrMalformedPayload, "edupulse.pulse.created"},
		{"wrong payload type", func(m *message.Message) { m.Payload = []byte(`{"pulse_id": 12}`) }, bus.ErrMalformedPayload, "pulse_id"},
		{"no name", func(m *message.Message) { delete(m.Metadata, bus.MetadataName) }, bus.ErrMalformedEnvelope, "event_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid.Copy()
			tt.edit(m)
			ev, err := gen.Registry().Decode(m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, %v; want an error wrapping %v", ev, err, tt.want)
			}
			var de *bus.DecodeError
			if !errors.As(err, &de) || de.MessageID != valid.UUID {
				t.Errorf("error %v is not a *bus.DecodeError for message %s", err, valid.UUID)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

// Issue 11: Kind numbers come from the schema lock (events/eventbus.lock.json):
// declaring PulseAnsweredV2 gave it a new number instead of renumbering
// PulseCreated, which sorts after it.
func TestKindNumbersAreStable(t *testing.T) {
	t.Parallel()
	for k, want := range map[gen.Kind]uint8{
		gen.KindBadgeAwarded:    1,
		gen.KindLessonPublished: 2,
		gen.KindPulseAnswered:   3,
		gen.KindPulseCreated:    4,
		gen.KindPulseAnsweredV2: 5,
	} {
		if uint8(k) != want {
			t.Errorf("%v = %d, want %d", k, uint8(k), want)
		}
	}
}

// Issue 11: a PulseAnswered version 1 message decodes as version 1 and
// upcasts into version 2, answered before grading (correct), with its
// envelope.
func TestUpcastPulseAnswered(t *testing.T) {
	t.Parallel()
	reg := gen.Registry()
	v1 := gen.NewPulseAnswered(pulseID, answerID, studentID, at)
	msg, err := reg.NewMessage(context.Background(), v1)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := reg.Decode(msg.Copy())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decoded.(gen.PulseAnswered); !ok {
		t.Fatalf("decoded %T, want the version it was published with", decoded)
	}
	up, err := reg.UpcastLatest(decoded)
	if err != nil {
		t.Fatal(err)
	}
	want := events.PulseAnsweredV2{PulseID: pulseID, AnswerID: answerID, StudentID: studentID, Correct: true, AnsweredAt: at}
	v2, ok := up.(gen.PulseAnsweredV2)
	if !ok {
		t.Fatalf("upcast to %T, want gen.PulseAnsweredV2", up)
	}
	if diff := cmp.Diff(want, v2.PulseAnsweredV2); diff != "" {
		t.Errorf("upcast payload (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(v1.Envelope(), v2.Envelope()); diff != "" {
		t.Errorf("upcast envelope (-want +got):\n%s", diff)
	}
}
