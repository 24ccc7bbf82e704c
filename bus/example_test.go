package bus_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// A typed event travels as a Watermill message: the payload is the event's
// JSON, the envelope is metadata, and the event id is the message UUID.
func ExampleRegistry_NewMessage() {
	pulse := uuid.MustParse("0193a7c4-0000-7000-8000-000000000001")
	ev := gen.NewPulseCreated(pulse, uuid.Nil, "Intro to Topology", time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))

	msg, err := gen.Registry().NewMessage(context.Background(), ev)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg.Payload))
	fmt.Println(msg.Metadata.Get(bus.MetadataName), msg.Metadata.Get(bus.MetadataVersion), msg.Metadata.Get(bus.MetadataAggregateID))

	back, err := gen.Registry().Decode(msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(back.(gen.PulseCreated).Title, back.Envelope().ID == ev.Envelope().ID)
	// Output:
	// {"pulse_id":"0193a7c4-0000-7000-8000-000000000001","author_id":"00000000-0000-0000-0000-000000000000","title":"Intro to Topology","published_at":"2026-11-23T09:00:00Z"}
	// edupulse.pulse.created 1 0193a7c4-0000-7000-8000-000000000001
	// Intro to Topology true
}

// Every event of one aggregate goes through the same lane.
func ExampleLaneOf() {
	fmt.Println(bus.LaneOf("0193a7c4-0000-7000-8000-000000000001", 4) == bus.LaneOf("0193a7c4-0000-7000-8000-000000000001", 4))
	// Output: true
}
