package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// An outbox payload built by hand, here for a corrected dead letter,
// reads back as the same message and event.
func ExampleWrapOutboxPayload() {
	ctx := context.Background()
	pulse := uuid.MustParse("0193a7c4-0000-7000-8000-000000000001")
	ev := gen.NewPulseCreated(pulse, uuid.Nil, "Corrected title", time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		panic(err)
	}
	payload, err := bus.WrapOutboxPayload(ev.EventName(), msg) // then DeadLetters.Fix(ctx, id, payload)
	if err != nil {
		panic(err)
	}
	topic, back, err := bus.UnwrapOutboxPayload(payload)
	if err != nil {
		panic(err)
	}
	decoded, err := gen.Registry().DecodeOutboxPayload(payload)
	if err != nil {
		panic(err)
	}
	fmt.Println(topic, back.UUID == msg.UUID, back.Metadata.Get(bus.MetadataAggregateID))
	fmt.Println(decoded.(gen.PulseCreated).Title)
	// Output:
	// edupulse.pulse.created true 0193a7c4-0000-7000-8000-000000000001
	// Corrected title
}

func TestWrapOutboxPayloadRefusesWhatUnwrapWouldRefuse(t *testing.T) {
	if _, err := bus.WrapOutboxPayload("", message.NewMessage("id", nil)); err == nil {
		t.Error("empty topic accepted")
	}
	if _, err := bus.WrapOutboxPayload("topic", message.NewMessage("", nil)); err == nil {
		t.Error("empty UUID accepted")
	}
}
