package kafkabroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// TestPermanentErrors publishes what a Kafka broker (kfake) or Sarama
// refuses for good, and checks each error is marked permanent, and an
// outage's is not.
func TestPermanentErrors(t *testing.T) {
	all := func(op kmsg.ACLOperation, typ kmsg.ACLResourceType, name string, allow bool) kfake.ACL {
		return kfake.ACL{Resource: typ, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: allow}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.User("PLAIN", "app", "pw",
			all(kmsg.ACLOperationAll, kmsg.ACLResourceTypeCluster, "kafka-cluster", true),
			all(kmsg.ACLOperationAll, kmsg.ACLResourceTypeTopic, "*", true),
			all(kmsg.ACLOperationWrite, kmsg.ACLResourceTypeTopic, "secret", false)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	url := "kafka://app:pw@" + c.ListenAddrs()[0]
	b, err := broker.Open(context.Background(), url, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// A topic made by an operator, with a smaller message limit.
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_3_0_0
	cfg.Net.SASL.Enable, cfg.Net.SASL.User, cfg.Net.SASL.Password = true, "app", "pw"
	admin, err := sarama.NewClusterAdmin(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	limit := "1000"
	if err := admin.CreateTopic("small", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"max.message.bytes": &limit}}, false); err != nil {
		t.Fatal(err)
	}

	if err := admin.CreateTopic("a_topic", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
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
		{"above the topic's max.message.bytes", "small", 5000, "Message was too large"},
		{"above Producer.MaxMessageBytes", "big", 2 << 20, "larger than configured Producer.MaxMessageBytes"},
		{"invalid topic", "a.topic", 10, "request attempted to perform an operation on an invalid topic"}, // collides with a_topic
		{"write denied", "secret", 10, "not authorized to access this topic"},
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
		})
	}
	if err := b.Publisher().Publish("fine", msg(10)); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// An outage is not permanent.
	c.Close()
	begin := time.Now()
	err = b.Publisher().Publish("fine", msg(10))
	t.Logf("with the broker down: %v (after %v)", err, time.Since(begin).Round(time.Millisecond))
	if err == nil || bus.IsPermanent(err) {
		t.Errorf("publish with the broker down: %v, want a transient error", err)
	}
}
