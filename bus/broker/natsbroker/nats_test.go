package natsbroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/natsbroker"
	"github.com/edupulse/eventbus/bus/broker/natsbroker/internal/natsserver"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		Refusal:           &brokertest.Refusal{Title: brokertest.OversizedTitle(servers.MaxMessageSize), Error: "nats: maximum payload exceeded"},
		Restartable:       func(t *testing.T) brokertest.Restarter { return natsserver.RestartableNATS(t) },
	}, func(t *testing.T) string { return natsserver.NATS(t) })
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokertest.RunOpenFailures(ctx, t, "s3cret-pw", []brokertest.OpenFailure{
		{URL: "nats://user:s3cret-pw@127.0.0.1:1", Want: "connect"},
		{URL: "nats://user:s3cret-pw@127.0.0.1:4222?ack_wait=soon", Want: "ack_wait"},
		{URL: "nats://user:s3cret-pw@127.0.0.1:4222?max_ack_pending=0", Want: "max_ack_pending"},
		{URL: "nats://user:s3cret-pw@127.0.0.1:4222?acks=all", Want: "unknown query parameter"},
	})
}

// TestAuth opens brokers on servers requiring a password or a token, and
// checks that a wrong one is refused without showing it.
func TestAuth(t *testing.T) {
	for name, opts := range map[string]*server.Options{
		"password": {Username: "app", Password: "s3cret-pw"},
		"token":    {Authorization: "s3cret-pw"},
	} {
		t.Run(name, func(t *testing.T) {
			opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, t.TempDir(), true, true
			s, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			s.Start()
			t.Cleanup(s.Shutdown)
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatal("server not ready")
			}
			host := strings.TrimPrefix(s.ClientURL(), "nats://")
			user := map[string]string{"password": "app", "token": "token"}[name]
			ctx := context.Background()
			b, err := broker.Open(ctx, "nats://"+user+":s3cret-pw@"+host, broker.Options{})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			b.Close()
			_, err = broker.Open(ctx, "nats://"+user+":wrong-pw@"+host, broker.Options{})
			if err == nil {
				t.Fatal("open with a wrong password succeeded")
			}
			t.Logf("wrong password: %v", err)
			if strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
}

func TestGroups(t *testing.T) { brokertest.RunGroups(t, natsserver.NATS(t)) }

// TestOutage: the relay's pipeline against a JetStream that fails one
// event, then restarts mid-stream (brokertest.RunOutage).
func TestOutage(t *testing.T) {
	srv := natsserver.RestartableNATS(t)
	// A short ack_wait: the consumer's messages unacknowledged when the
	// server went down come back soon after it.
	brokertest.RunOutage(t, srv.URL()+"?ack_wait=2s", func(tb testing.TB) {
		if err := srv.Stop(); err != nil {
			tb.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			tb.Fatal(err)
		}
	})
}
