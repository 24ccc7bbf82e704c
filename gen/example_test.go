package gen_test

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// greeter handles only PulseCreated; embedding UnhandledEvents ignores the
// other events (and gives up the compile error for new ones).
type greeter struct{ gen.UnhandledEvents }

func (greeter) HandlePulseCreated(_ context.Context, e gen.PulseCreated) error {
	fmt.Printf("new pulse %q by %s\n", e.Title, e.AuthorID)
	return nil
}

// An event travels as a Watermill message: the JSON payload, the event id as
// the message UUID and the envelope as metadata. The registry turns it back
// into its type, and Dispatch routes it to its handler method.
func Example() {
	ctx := context.Background()
	ev := gen.NewPulseCreated(
		uuid.MustParse("0190c0de-0000-7000-8000-000000000001"),
		uuid.MustParse("0190c0de-0000-7000-8000-000000000002"),
		"How much is 3/4 of 12?",
		time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC),
	)

	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Metadata.Get(bus.MetadataName), msg.Metadata.Get(bus.MetadataVersion), msg.Metadata.Get(bus.MetadataAggregateType))
	fmt.Println(string(msg.Payload))

	decoded, err := gen.Registry().Decode(msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(decoded.(gen.Event).Kind(), decoded.Envelope().ID == ev.Envelope().ID)
	if err := gen.Dispatch(ctx, greeter{}, decoded); err != nil {
		panic(err)
	}
	// Output:
	// edupulse.pulse.created 1 pulse
	// {"pulse_id":"0190c0de-0000-7000-8000-000000000001","author_id":"0190c0de-0000-7000-8000-000000000002","title":"How much is 3/4 of 12?","published_at":"2025-03-14T15:09:26Z"}
	// edupulse.pulse.created true
	// new pulse "How much is 3/4 of 12?" by 0190c0de-0000-7000-8000-000000000002
}
