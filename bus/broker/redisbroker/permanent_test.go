package redisbroker_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

// TestPermanentErrors publishes what a real Redis server refuses for good,
// and checks each error is marked permanent, and an outage's is not.
func TestPermanentErrors(t *testing.T) {
	ctx := context.Background()
	admin := servers.Redis(t)
	opts, err := redis.ParseURL(admin)
	if err != nil {
		t.Fatal(err)
	}
	cl := redis.NewClient(opts)
	defer cl.Close()
	// A key of another type where a topic's stream would be, and a user
	// who may write only to some keys.
	if err := cl.Set(ctx, "str", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Do(ctx, "ACL", "SETUSER", "app", "on", ">pw", "+@all", "resetkeys", "~fine", "~big", "~str", "~meta").Err(); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(admin)
	u.User = url.UserPassword("app", "pw")
	b, err := broker.Open(ctx, u.String(), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	msg := func(size int) *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte(strings.Repeat("x", size)))
		m.Metadata.Set(bus.MetadataAggregateID, uuid.NewString())
		return m
	}
	reserved := msg(10)
	reserved.Metadata.Set("_watermill_message_uuid", "x")
	for _, tc := range []struct {
		name, topic string
		msg         *message.Message
		want        string
	}{
		{"above proto-max-bulk-len", "big", msg(servers.RedisMaxBulkLen + 1), "above the server's proto-max-bulk-len"},
		{"not a stream", "str", msg(10), "WRONGTYPE"},
		{"write denied", "secret", msg(10), "NOPERM"},
		{"reserved metadata", "meta", reserved, "reserved metadata key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Publisher().Publish(tc.topic, tc.msg)
			t.Log(err)
			if !bus.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
	if err := b.Publisher().Publish("fine", msg(servers.RedisMaxBulkLen-1000)); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// A closed client is not the message's fault.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	err = b.Publisher().Publish("fine", msg(10))
	if err == nil || bus.IsPermanent(err) {
		t.Errorf("publish on a closed client: %v, want a transient error", err)
	}
}
