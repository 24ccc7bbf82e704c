package servers

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/edupulse/eventbus/internal/pgserver"
)

// Restartable is a broker server of one test's own that the test stops and
// starts again, on the same address and with the data it had (streams,
// queues, messages, consumer groups and their offsets), as an operator
// restarting it would. Its URL stays the same, so clients reconnect to it.
// It is stopped at the test's cleanup.
type Restartable struct {
	url string

	mu      sync.Mutex
	running bool
	stop    func() error
	start   func() error
}

// URL returns the broker's URL.
func (r *Restartable) URL() string { return r.url }

// Stop stops the server cleanly (as SIGTERM would): its clients lose their
// connections. Stopping a stopped server does nothing.
func (r *Restartable) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		return nil
	}
	r.running = false
	if err := r.stop(); err != nil {
		return fmt.Errorf("servers: stop %s: %w", r.url, err)
	}
	return nil
}

// Start starts the stopped server again and returns once it accepts
// connections. Starting a running server does nothing.
func (r *Restartable) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return nil
	}
	if err := r.start(); err != nil {
		return fmt.Errorf("servers: start %s again: %w", r.url, err)
	}
	r.running = true
	return nil
}

// NewRestartable returns the Restartable at url, running, which stop stops
// and start starts again; it is stopped at the test's cleanup. The NATS and
// Kafka servers, which are Go modules, make theirs with it in their
// adapters' modules (natsserver.RestartableNATS, kafkaserver.RestartableKafka).
func NewRestartable(tb testing.TB, url string, stop, start func() error) *Restartable {
	r := &Restartable{url: url, running: true, stop: stop, start: start}
	tb.Cleanup(func() {
		if err := r.Stop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return r
}

// RestartableRedis is Redis on a redis-server of the test's own,
// restartable: unlike Redis's, it keeps an append-only file in a temporary
// directory, so that its streams and consumer groups survive a restart.
func RestartableRedis(tb testing.TB) *Restartable {
	tb.Helper()
	bin := lookPath(tb, "redis-server", "redis-server")
	dir := tb.TempDir()
	var p *process
	start := func(port int) error {
		cmd := exec.Command(bin,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "yes", "--dir", dir,
			"--protected-mode", "yes", "--proto-max-bulk-len", strconv.Itoa(RedisMaxBulkLen), "--daemonize", "no", "--loglevel", "warning")
		cmd.Dir = dir
		var err error
		if p, err = startProcess("redis-server", cmd); err != nil {
			return err
		}
		if err := waitTCP(p, port, readyTimeout, redisPing); err != nil {
			_ = p.stop(syscall.SIGKILL)
			return err
		}
		return nil
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		if lastErr = start(port); lastErr != nil {
			if p != nil && strings.Contains(p.out.String(), "in use") {
				continue // the port was taken meanwhile: try another
			}
			break
		}
		return NewRestartable(tb, fmt.Sprintf("redis://127.0.0.1:%d/0", port),
			func() error { return p.stop(syscall.SIGTERM) },
			func() error { return start(port) })
	}
	tb.Fatalf("servers: redis-server: %v", lastErr)
	return nil
}

// RestartableRabbitMQ is RabbitMQ on a server of the test's own (not the
// one RabbitMQ shares between tests), restartable: the node stops with
// SIGTERM and starts again with the same ports, node name and data
// directory, so durable queues and persistent messages survive. Its epmd
// keeps running meanwhile. Each start takes 5-10 seconds.
func RestartableRabbitMQ(tb testing.TB) *Restartable {
	tb.Helper()
	if _, err := exec.LookPath(rabbitmqServerBin); err != nil {
		missing(tb, "rabbitmq-server", err)
	}
	epmd := lookPath(tb, "rabbitmq-server", "epmd")
	srv, err := startRabbitMQ(epmd)
	if err != nil {
		tb.Fatalf("servers: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.stop(); err != nil {
			tb.Errorf("servers: %v", err)
		}
	})
	return NewRestartable(tb, srv.url,
		func() error { return srv.node.stop(syscall.SIGTERM) },
		srv.startNode)
}

// RestartablePostgres is a database on a PostgreSQL cluster of the test's
// own, for the postgres broker scheme (watermill-sql), restartable: the
// cluster shuts down cleanly and starts again on the same port with its
// data. Its URL names the database.
func RestartablePostgres(tb testing.TB) *Restartable {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	if errors.Is(err, pgserver.ErrNoBinaries) {
		missing(tb, "postgresql", err)
	}
	if err != nil {
		tb.Fatalf("servers: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			tb.Errorf("servers: %v", err)
		}
	})
	url, err := srv.CreateDatabase(ctx, "broker")
	if err != nil {
		tb.Fatalf("servers: %v", err)
	}
	return NewRestartable(tb, url, srv.Shutdown, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		return srv.Resume(ctx)
	})
}
