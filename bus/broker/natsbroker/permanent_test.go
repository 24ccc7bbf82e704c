package natsbroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// TestPermanentErrors publishes what a real NATS server refuses for good,
// and checks each error is marked permanent, and an outage's is not.
func TestPermanentErrors(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		MaxPayload: 4096,
		Users: []*server.User{{Username: "app", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"secret.>"}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := "nats://app:pw@" + strings.TrimPrefix(s.ClientURL(), "nats://")
	b, err := broker.Open(context.Background(), url, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// A stream made by an operator, with a smaller message limit.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "small", Subjects: []string{"small.*"}, MaxMsgSize: 256}); err != nil {
		t.Fatal(err)
	}

	msg := func(size int) *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte(strings.Repeat("x", size)))
		m.Metadata.Set(bus.MetadataAggregateID, uuid.NewString())
		return m
	}
	for _, tc := range []struct {
		name, topic string
		size        int
		want        string
	}{
		{"above max_payload", "big", 5000, "maximum payload exceeded"},
		{"above the stream's max_msg_size", "small", 1000, "message size exceeds maximum"},
		{"invalid topic", "a..b", 10, "not a valid NATS subject"},
		{"publish denied", "secret", 10, "Permissions Violation for Publish"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			err := b.Publisher().Publish(tc.topic, msg(tc.size))
			t.Logf("%v (after %v)", err, time.Since(begin).Round(time.Millisecond))
			if !bus.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
			if time.Since(begin) > 10*time.Second {
				t.Errorf("the refusal took %v to tell", time.Since(begin))
			}
		})
	}
	if err := b.Publisher().Publish("fine", msg(10)); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// A closed connection is not the message's fault.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	err = b.Publisher().Publish("fine", msg(10))
	if err == nil || bus.IsPermanent(err) || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("publish on a closed connection: %v, want a transient error", err)
	}
}
