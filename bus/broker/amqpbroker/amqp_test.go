package amqpbroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/amqpbroker"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestConformance also runs the groups test: RabbitMQ takes seconds to boot,
// and one server serves the subtests of a test that holds it.
func TestConformance(t *testing.T) {
	servers.RabbitMQ(t)
	brokertest.Run(t, brokertest.Features{OrderPerAggregate: true}, func(t *testing.T) string { return servers.RabbitMQ(t) })
	t.Run("Groups", func(t *testing.T) { brokertest.RunGroups(t, servers.RabbitMQ(t)) })
	t.Run("GroupsQuorumQueues", func(t *testing.T) {
		brokertest.RunGroups(t, servers.RabbitMQ(t)+"?queue_type=quorum&prefetch=8&channels=2")
	})
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ url, want string }{
		{"amqp://user:s3cret-pw@127.0.0.1:1/", "connect"},
		{"amqps://user:s3cret-pw@127.0.0.1:1/", "connect"},
		{"amqp://user:s3cret-pw@127.0.0.1:5672/?prefetch=0", "prefetch"},
		{"amqp://user:s3cret-pw@127.0.0.1:5672/?queue_type=stream", "queue_type"},
	} {
		b, err := broker.Open(ctx, tc.url, broker.Options{})
		if err == nil {
			b.Close()
			t.Fatalf("Open(%s) succeeded", broker.Redact(tc.url))
		}
		t.Logf("Open(%s): %v", broker.Redact(tc.url), err)
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("error reveals the password: %v", err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) = %v, want it to mention %q", broker.Redact(tc.url), err, tc.want)
		}
	}
}
