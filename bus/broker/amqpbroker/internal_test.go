package amqpbroker

import (
	"errors"
	"fmt"
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

// TestPermanent checks the classifier on the errors a test broker does not
// produce (403 needs a user without write permission).
func TestPermanent(t *testing.T) {
	refused := &amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'app'", Server: true}
	inequivalent := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'type'", Server: true}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("message m: %w", refused), true},
		{fmt.Errorf("%w x: %w", errDeclare, refused), true},
		{fmt.Errorf("message m: %w", &amqp.Error{Code: amqp.ContentTooLarge, Server: true}), true},
		{fmt.Errorf("%w x: %w", errDeclare, inequivalent), false},
		{fmt.Errorf("message m: %w", &amqp.Error{Code: amqp.ConnectionForced, Server: true}), false},
		{fmt.Errorf("message m: %w", amqp.ErrClosed), false},
		{errors.New("message m: not confirmed within 30s"), false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
