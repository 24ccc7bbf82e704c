package kafkabroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/kafkabroker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{OrderPerAggregate: true}, func(t *testing.T) string { return servers.Kafka(t) })
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ url, want string }{
		{"kafka://user:s3cret-pw@127.0.0.1:1", "publisher"},
		{"kafka://user:s3cret-pw@127.0.0.1:9092?partitions=-1", "partitions"},
		{"kafka://user:s3cret-pw@127.0.0.1:9092?version=banana", "version"},
		{"kafka://user:s3cret-pw@127.0.0.1:9092?acks=all", "unknown query parameter"},
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

func TestGroups(t *testing.T) { brokertest.RunGroups(t, servers.Kafka(t)) }
