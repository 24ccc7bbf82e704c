package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/redisbroker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		Refusal:           &brokertest.Refusal{Title: brokertest.OversizedTitle(servers.RedisMaxBulkLen), Error: "above the server's proto-max-bulk-len"},
		Restartable:       func(t *testing.T) brokertest.Restarter { return servers.RestartableRedis(t) },
	}, func(t *testing.T) string { return servers.Redis(t) })
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokertest.RunOpenFailures(ctx, t, "s3cret-pw", []brokertest.OpenFailure{
		{URL: "redis://user:s3cret-pw@127.0.0.1:1/0", Want: "ping"},
		{URL: "redis://user:s3cret-pw@127.0.0.1:6379/0?maxlen=-1", Want: "maxlen"},
		{URL: "redis://user:s3cret-pw@127.0.0.1:6379/0?claim_idle=x", Want: "claim_idle"},
		{URL: "redis://user:s3cret-pw@127.0.0.1:6379/0?acks=all", Want: "acks"},
	})
}

func TestGroups(t *testing.T) { brokertest.RunGroups(t, servers.Redis(t)) }
