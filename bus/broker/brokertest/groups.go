package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// RunGroups checks consumer groups, for brokers that have them, on a dotted
// topic: each group gets every message, the subscribers of a group share
// them, and a group that stops and comes back resumes after the messages it
// acknowledged. brokerURL names a running broker; topics and groups are
// unique to the call.
func RunGroups(t *testing.T, brokerURL string) {
	url := brokerURL
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := "t" + uuid.NewString()[:8]
	topic := prefix + ".pulse.created"
	groupA, groupB := prefix+"_a", prefix+"_b"

	open := func() broker.Broker {
		b, err := broker.Open(ctx, url, broker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	subscribe := func(b broker.Broker, group string) <-chan *message.Message {
		s, err := b.Subscriber(group)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := s.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	publish := func(b broker.Broker, from, to int) map[string]bool {
		want := map[string]bool{}
		for i := from; i < to; i++ {
			m := message.NewMessage(uuid.NewString(), []byte(fmt.Sprintf(`{"n":%d}`, i)))
			m.Metadata.Set(bus.MetadataAggregateID, fmt.Sprintf("agg-%d", i%3))
			if err := b.Publisher().Publish(topic, m); err != nil {
				t.Fatal(err)
			}
			want[m.UUID] = true
		}
		return want
	}
	// receive acks messages from chans until every wanted one came, and
	// fails on a message it does not want.
	receive := func(name string, want map[string]bool, chans ...<-chan *message.Message) {
		t.Helper()
		got := map[string]bool{}
		merged := make(chan *message.Message)
		for _, ch := range chans {
			go func() {
				for m := range ch {
					select {
					case merged <- m:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		for len(got) < len(want) {
			select {
			case m := <-merged:
				m.Ack()
				if !want[m.UUID] {
					t.Fatalf("%s: unexpected message %s", name, m.UUID)
				}
				got[m.UUID] = true
			case <-ctx.Done():
				t.Fatalf("%s: received %d of %d messages", name, len(got), len(want))
			}
		}
	}

	b := open()
	a1, a2 := subscribe(b, groupA), subscribe(b, groupA)
	gb := subscribe(b, groupB)
	want := publish(b, 0, 20)
	receive("group a (two subscribers)", want, a1, a2)
	receive("group b", want, gb)
	time.Sleep(200 * time.Millisecond) // let acks reach the broker
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	b = open()
	defer b.Close()
	again := subscribe(b, groupA)
	receive("group a after a restart", publish(b, 20, 25), again)
}
