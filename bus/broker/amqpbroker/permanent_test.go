package amqpbroker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

// testPermanentErrors publishes what a real RabbitMQ refuses for good and
// what it refuses for a while, and checks which errors are permanent, and
// that the publisher goes on after the broker closed its channel. It runs
// in TestConformance, on its server.
func testPermanentErrors(t *testing.T) {
	url := servers.RabbitMQ(t)
	b, err := broker.Open(context.Background(), url+"?channels=1", broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	prefix := "t" + uuid.NewString()[:8]
	// An exchange of another type where a topic's would be.
	if err := ch.ExchangeDeclare(prefix+".direct", "direct", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	msg := func(size int) *message.Message {
		return message.NewMessage(uuid.NewString(), []byte(strings.Repeat("x", size)))
	}
	publish := func(topic string, size int, permanent bool, want string) {
		t.Helper()
		err := b.Publisher().Publish(topic, msg(size))
		t.Logf("publish %d bytes to %s: %v", size, topic, err)
		if permanent != bus.IsPermanent(err) {
			t.Errorf("error %v: permanent %v, want %v", err, bus.IsPermanent(err), permanent)
		}
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	fine := prefix + ".fine"
	publish(fine, 10, false, "")
	publish(fine, servers.MaxMessageSize+1, true, "PRECONDITION_FAILED - message size")
	publish(fine, 10, false, "") // on a new channel
	publish(prefix+".direct", 10, false, "inequivalent arg 'type'")
	publish(fine, 10, false, "")

	// An exchange deleted behind the publisher's back is declared again.
	if err := ch.ExchangeDelete(fine, false, false); err != nil {
		t.Fatal(err)
	}
	publish(fine, 10, false, "NOT_FOUND")
	publish(fine, 10, false, "")

	// A closed broker is not the message's fault.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	publish(fine, 10, false, "publisher closed")
}
