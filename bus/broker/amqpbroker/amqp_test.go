package amqpbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker/amqpbroker"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestConformance also runs the groups test and the test of permanent
// errors: RabbitMQ takes seconds to boot, and one server serves the
// subtests of a test that holds it.
func TestConformance(t *testing.T) {
	servers.RabbitMQ(t)
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		Refusal:           &brokertest.Refusal{Title: brokertest.OversizedTitle(servers.MaxMessageSize), Error: "PRECONDITION_FAILED - message size"},
		DeadLetterReader:  amqpbroker.RetainGroup,
		// A server of its own, not the shared one, which other subtests use.
		Restartable: func(t *testing.T) brokertest.Restarter { return servers.RestartableRabbitMQ(t) },
	}, func(t *testing.T) string { return servers.RabbitMQ(t) })
	t.Run("Groups", func(t *testing.T) { brokertest.RunGroups(t, servers.RabbitMQ(t)) })
	t.Run("GroupsQuorumQueues", func(t *testing.T) {
		brokertest.RunGroups(t, servers.RabbitMQ(t)+"?queue_type=quorum&prefetch=8&channels=2")
	})
	t.Run("PermanentErrors", testPermanentErrors)
	t.Run("DeadLettersKept", testDeadLettersKept)
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokertest.RunOpenFailures(ctx, t, "s3cret-pw", []brokertest.OpenFailure{
		{URL: "amqp://user:s3cret-pw@127.0.0.1:1/", Want: "connect"},
		{URL: "amqps://user:s3cret-pw@127.0.0.1:1/", Want: "connect"},
		{URL: "amqp://user:s3cret-pw@127.0.0.1:5672/?prefetch=0", Want: "prefetch"},
		{URL: "amqp://user:s3cret-pw@127.0.0.1:5672/?queue_type=stream", Want: "queue_type"},
	})
}

// TestOutage: the relay's pipeline against a RabbitMQ that fails one
// event, then restarts mid-stream (brokertest.RunOutage), on a server of
// its own.
func TestOutage(t *testing.T) {
	srv := servers.RestartableRabbitMQ(t)
	brokertest.RunOutage(t, srv.URL(), func(tb testing.TB) {
		if err := srv.Stop(); err != nil {
			tb.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			tb.Fatal(err)
		}
	})
}
