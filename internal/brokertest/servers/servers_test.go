package servers_test

import (
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

func dial(t *testing.T, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	c.Close()
}

func TestServers(t *testing.T) {
	for name, start := range map[string]func(testing.TB) string{
		"Redis": servers.Redis, "RabbitMQ": servers.RabbitMQ,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			begin := time.Now()
			u := start(t)
			t.Logf("%s ready at %s in %v", name, u, time.Since(begin).Round(time.Millisecond))
			dial(t, u)
		})
	}
}
