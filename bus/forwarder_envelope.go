package bus

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// forwarderEnvelope mirrors the JSON envelope of Watermill's
// components/forwarder, in which the outbox stores each event: the
// forwarder unwraps it and publishes the inner message to DestinationTopic
// with the original UUID and metadata. The field names are Watermill's
// wire format and must not change.
type forwarderEnvelope struct {
	DestinationTopic string            `json:"destination_topic"`
	UUID             string            `json:"uuid"`
	Payload          []byte            `json:"payload"`
	Metadata         map[string]string `json:"metadata"`
}

// ErrMalformedOutboxRow means an outbox row whose payload is not a
// Watermill forwarder envelope.
var ErrMalformedOutboxRow = errors.New("malformed outbox row")

// wrapForForwarder encodes a message, given its UUID, payload and
// metadata (a compact JSON object, as encoding/json writes a map), in the
// forwarder's envelope addressed to topic: the bytes encoding/json writes
// for forwarderEnvelope (a test compares them), written without
// reflection, on the outbox's hot path.
func wrapForForwarder(topic, uuid string, payload, metadata []byte) []byte {
	b := make([]byte, 0, 64+len(topic)+len(uuid)+base64.StdEncoding.EncodedLen(len(payload))+len(metadata))
	b = append(b, `{"destination_topic":`...)
	b = appendJSONString(b, topic)
	b = append(b, `,"uuid":`...)
	b = appendJSONString(b, uuid)
	b = append(b, `,"payload":"`...)
	b = base64.StdEncoding.AppendEncode(b, payload)
	b = append(b, `","metadata":`...)
	b = append(b, metadata...)
	return append(b, '}')
}

// UnwrapOutboxPayload reads an outbox row's payload (a Watermill forwarder
// envelope) and returns the destination topic and the message inside it.
// The error wraps ErrMalformedOutboxRow when the payload is not such an
// envelope, has no destination topic or no message UUID.
func UnwrapOutboxPayload(payload []byte) (topic string, msg *message.Message, err error) {
	var env forwarderEnvelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrMalformedOutboxRow, err)
	}
	if env.DestinationTopic == "" {
		return "", nil, fmt.Errorf("%w: no destination_topic", ErrMalformedOutboxRow)
	}
	if env.UUID == "" {
		return "", nil, fmt.Errorf("%w: no message uuid", ErrMalformedOutboxRow)
	}
	msg = message.NewMessage(env.UUID, env.Payload)
	for k, v := range env.Metadata {
		msg.Metadata[k] = v
	}
	return env.DestinationTopic, msg, nil
}

// DecodeOutboxPayload decodes an outbox row's payload into its typed event.
// Generated query wrappers use it.
func (r *Registry) DecodeOutboxPayload(payload []byte) (Event, error) {
	_, msg, err := UnwrapOutboxPayload(payload)
	if err != nil {
		return nil, err
	}
	return r.Decode(msg)
}
