package amqpbroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/broker/amqpbroker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

// testDeadLettersKept (issue 10.6): RabbitMQ confirms and drops a message
// published to an exchange no queue is bound to. PublishDurably, which
// consumers use for dead letters, declares the retained queue first, so a
// reader that subscribes later gets the message; and it publishes with the
// mandatory flag, so that a message RabbitMQ could route nowhere (the
// queue deleted behind the publisher's back) is an error, not a silent
// loss. It runs in TestConformance, on its server.
func testDeadLettersKept(t *testing.T) {
	url := servers.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := broker.Open(ctx, url+"?channels=1", broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dp, ok := b.Publisher().(bus.DurablePublisher)
	if !ok {
		t.Fatalf("the publisher %T has no PublishDurably", b.Publisher())
	}
	topic := "t" + uuid.NewString()[:8] + "_dead_letters"
	newMsg := func() *message.Message { return message.NewMessage(uuid.NewString(), []byte(`{"n":1}`)) }

	// Nobody subscribes to the topic: the message waits in the retained
	// queue.
	first := newMsg()
	if err := dp.PublishDurably(topic, first); err != nil {
		t.Fatalf("PublishDurably: %v", err)
	}
	sub, err := b.Subscriber(amqpbroker.RetainGroup)
	if err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	ch, err := sub.Subscribe(subCtx, topic)
	if err != nil {
		t.Fatal(err)
	}
	receive := func(want *message.Message) {
		t.Helper()
		select {
		case m := <-ch:
			m.Ack()
			if m.UUID != want.UUID {
				t.Fatalf("received %s, want %s", m.UUID, want.UUID)
			}
		case <-ctx.Done():
			t.Fatalf("message %s not received from the retained queue", want.UUID)
		}
	}
	receive(first)
	stop()

	// The queue deleted behind the publisher's back: the broker returns
	// the mandatory message, which is an error; the queue is declared again
	// on the next publish.
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDelete(amqpbroker.QueueName(amqpbroker.RetainGroup, topic), false, false, false); err != nil {
		t.Fatalf("delete the retained queue: %v", err)
	}
	err = dp.PublishDurably(topic, newMsg())
	t.Logf("PublishDurably with the queue deleted: %v", err)
	if err == nil || !strings.Contains(err.Error(), "NO_ROUTE") || bus.IsPermanent(err) {
		t.Fatalf("PublishDurably with the retained queue deleted = %v, want a transient error saying the broker returned it (NO_ROUTE)", err)
	}
	third := newMsg()
	if err := dp.PublishDurably(topic, third); err != nil {
		t.Fatalf("PublishDurably after the queue was deleted: %v", err)
	}
	sub2, err := b.Subscriber(amqpbroker.RetainGroup)
	if err != nil {
		t.Fatal(err)
	}
	ch, err = sub2.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	receive(third)

}
