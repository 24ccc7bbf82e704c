package gochannelbroker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
	"github.com/edupulse/eventbus/bus/broker/gochannelbroker"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		RefusesNothing:    "GoChannel hands any message to its subscribers in process: it refuses none",
		NotRestartable:    "GoChannel lives in the process: there is no broker to restart",
	}, func(*testing.T) string { return "gochannel://" })
}

// GoChannel keeps nothing, so PublishDurably returns nil only once a
// subscriber acknowledged the message; a subscription that stops before it
// acknowledged makes Publish and PublishDurably fail (GoChannel dropped the
// message and would report success).
func TestPublishDurably(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, "gochannel://", broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dp, ok := b.Publisher().(bus.DurablePublisher)
	if !ok {
		t.Fatalf("publisher %T has no PublishDurably", b.Publisher())
	}
	msg := func() *message.Message { return message.NewMessage(uuid.NewString(), []byte("{}")) }
	if err := dp.PublishDurably("dead", msg()); !errors.Is(err, gochannelbroker.ErrNotKept) {
		t.Fatalf("PublishDurably with no subscriber = %v, want ErrNotKept", err)
	}
	if err := dp.Publish("dead", msg()); err != nil {
		t.Fatalf("Publish with no subscriber = %v, want nil (dropped, as documented)", err)
	}

	sub, err := b.Subscriber("readers")
	if err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	ch, err := sub.Subscribe(subCtx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	sent := msg()
	go func() {
		if m := <-ch; m != nil {
			m.Ack()
		}
	}()
	if err := dp.PublishDurably("dead", sent); err != nil {
		t.Fatalf("PublishDurably to a subscriber that acks = %v", err)
	}

	// The subscriber takes the next message and stops before acking it.
	for _, publish := range []func(string, ...*message.Message) error{dp.PublishDurably, dp.Publish} {
		got := make(chan struct{})
		go func() {
			if m := <-ch; m != nil {
				close(got)
				stop()
			}
		}()
		err := publish("dead", msg())
		<-got
		if !errors.Is(err, gochannelbroker.ErrNotKept) {
			t.Fatalf("publish to a subscriber that stopped before acking = %v, want ErrNotKept", err)
		}
		subCtx, stop = context.WithCancel(ctx)
		if ch, err = sub.Subscribe(subCtx, "dead"); err != nil {
			t.Fatal(err)
		}
	}
	stop()

	nb, err := broker.Open(ctx, "gochannel://?block=false", broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	if err := nb.Publisher().(bus.DurablePublisher).PublishDurably("dead", msg()); !errors.Is(err, gochannelbroker.ErrNotKept) {
		t.Fatalf("PublishDurably with block=false = %v, want ErrNotKept", err)
	}
}
