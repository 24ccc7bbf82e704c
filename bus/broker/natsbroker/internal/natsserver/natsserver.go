// Package natsserver starts an embedded NATS server with JetStream for the
// natsbroker tests. It lives in the natsbroker module, not in
// internal/brokertest/servers, so that nats-server is a requirement of that
// module only: the other broker modules, and the root module, do not list it.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

// readyTimeout bounds waiting for the server to accept connections.
const readyTimeout = 60 * time.Second

// NATS starts an embedded NATS server with JetStream, storing in a temporary
// directory, on a free loopback port, and returns its URL
// (nats://127.0.0.1:PORT). Its max_payload is
// servers.MaxMessageSize. It stops at the test's cleanup.
func NATS(tb testing.TB) string {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "eventbus-test",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		HTTPPort:   0,
		JetStream:  true,
		MaxPayload: servers.MaxMessageSize,
		StoreDir:   tb.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		tb.Fatalf("natsserver: %v", err)
	}
	s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(readyTimeout) {
		tb.Fatalf("natsserver: not ready for connections after %v", readyTimeout)
	}
	if !s.JetStreamEnabled() {
		tb.Fatalf("natsserver: JetStream is not enabled")
	}
	return s.ClientURL()
}

// RestartableNATS is NATS on a server of the test's own, restartable: the
// embedded server stores JetStream in a temporary directory and starts again
// on the same port.
func RestartableNATS(tb testing.TB) *servers.Restartable {
	tb.Helper()
	dir := tb.TempDir()
	opts := func(port int) *server.Options {
		return &server.Options{
			ServerName: "eventbus-test",
			Host:       "127.0.0.1",
			Port:       port,
			HTTPPort:   0,
			JetStream:  true,
			MaxPayload: servers.MaxMessageSize,
			StoreDir:   dir,
			NoLog:      true,
			NoSigs:     true,
		}
	}
	start := func(port int) (*server.Server, error) {
		s, err := server.NewServer(opts(port))
		if err != nil {
			return nil, err
		}
		s.Start()
		if !s.ReadyForConnections(readyTimeout) {
			s.Shutdown()
			return nil, fmt.Errorf("nats: not ready for connections after %v", readyTimeout)
		}
		if !s.JetStreamEnabled() {
			s.Shutdown()
			return nil, errors.New("nats: JetStream is not enabled")
		}
		return s, nil
	}
	s, err := start(server.RANDOM_PORT)
	if err != nil {
		tb.Fatalf("natsserver: %v", err)
	}
	port := s.Addr().(*net.TCPAddr).Port
	return servers.NewRestartable(tb, s.ClientURL(),
		func() error {
			s.Shutdown()
			s.WaitForShutdown()
			return nil
		},
		func() error {
			s2, err := start(port)
			if err != nil {
				return err
			}
			s = s2
			return nil
		})
}
