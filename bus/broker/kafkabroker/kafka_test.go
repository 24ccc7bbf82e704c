package kafkabroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/kafkabroker"
	"github.com/edupulse/eventbus/bus/broker/kafkabroker/internal/kafkaserver"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		Refusal:           &brokertest.Refusal{Title: brokertest.OversizedTitle(servers.MaxMessageSize), Error: "Message was too large"},
		Restartable:       func(t *testing.T) brokertest.Restarter { return kafkaserver.RestartableKafka(t) },
	}, func(t *testing.T) string { return kafkaserver.Kafka(t) })
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokertest.RunOpenFailures(ctx, t, "s3cret-pw", []brokertest.OpenFailure{
		{URL: "kafka://user:s3cret-pw@127.0.0.1:1", Want: "publisher"},
		{URL: "kafka://user:s3cret-pw@127.0.0.1:9092?partitions=-1", Want: "partitions"},
		{URL: "kafka://user:s3cret-pw@127.0.0.1:9092?version=banana", Want: "version"},
		{URL: "kafka://user:s3cret-pw@127.0.0.1:9092?acks=all", Want: "unknown query parameter"},
	})
}

func TestGroups(t *testing.T) { brokertest.RunGroups(t, kafkaserver.Kafka(t)) }
