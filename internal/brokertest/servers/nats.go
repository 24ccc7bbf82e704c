package servers

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS starts an embedded NATS server with JetStream, storing in a temporary
// directory, on a free loopback port, and returns its URL
// (nats://127.0.0.1:PORT). Its max_payload is MaxMessageSize. It stops at the test's cleanup.
func NATS(tb testing.TB) string {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "eventbus-test",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		HTTPPort:   0,
		JetStream:  true,
		MaxPayload: MaxMessageSize,
		StoreDir:   tb.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		tb.Fatalf("servers: nats: %v", err)
	}
	s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(readyTimeout) {
		tb.Fatalf("servers: nats: not ready for connections after %v", readyTimeout)
	}
	if !s.JetStreamEnabled() {
		tb.Fatalf("servers: nats: JetStream is not enabled")
	}
	return s.ClientURL()
}
