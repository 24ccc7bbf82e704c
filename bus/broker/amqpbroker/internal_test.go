package amqpbroker

import (
	"net/url"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("amqp://u:p@h:5672/vh?prefetch=8&channels=2&queue_type=quorum&heartbeat=5")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if c.prefetch != 8 || c.channels != 2 || c.queueType != "quorum" {
		t.Errorf("parsed %+v", c)
	}
	if c.uri != "amqp://u:p@h:5672/vh?heartbeat=5" {
		t.Errorf("uri = %q: want our parameters removed, the client's kept", c.uri)
	}
}

func TestUnmarshalTolerant(t *testing.T) {
	msg, err := marshaler{}.Unmarshal(amqp.Delivery{
		MessageId: "m-1",
		Headers:   amqp.Table{"event_name": "x", "attempts": int32(3)},
		Body:      []byte("{}"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if msg.UUID != "m-1" || msg.Metadata.Get("attempts") != "3" || msg.Metadata.Get("event_name") != "x" {
		t.Errorf("got uuid %q metadata %v", msg.UUID, msg.Metadata)
	}
}
