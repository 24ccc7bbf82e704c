package bus

import (
	"encoding/json"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// WrapOutboxPayload encodes msg, addressed to the broker topic, as the
// payload of an outbox row (a Watermill forwarder envelope): the inverse of
// UnwrapOutboxPayload. Use it for a corrected dead letter (DeadLetters.Fix)
// or a row written by hand; Outbox.Publish builds its rows the same way,
// from Registry.NewMessage.
func WrapOutboxPayload(topic string, msg *message.Message) ([]byte, error) {
	if topic == "" {
		return nil, fmt.Errorf("bus: wrap message %s: empty topic", msg.UUID)
	}
	if msg.UUID == "" {
		return nil, fmt.Errorf("bus: wrap message for %s: empty message UUID", topic)
	}
	metadata, err := json.Marshal(map[string]string(msg.Metadata))
	if err != nil {
		return nil, fmt.Errorf("bus: wrap message %s: metadata: %w", msg.UUID, err)
	}
	return wrapForForwarder(topic, msg.UUID, msg.Payload, metadata), nil
}
