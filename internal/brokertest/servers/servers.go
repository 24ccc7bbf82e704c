// Package servers starts private message brokers for tests: each function
// takes a testing.TB, starts a server on a free loopback port (or reuses the
// one the test binary already runs, for RabbitMQ), stops it at the test's
// cleanup and returns the broker URL for broker.Open.
//
//   - Redis: the redis-server binary (Debian package redis-server).
//   - RabbitMQ: the rabbitmq-server of the Debian package rabbitmq-server,
//     started without its init script, as the calling user, with every
//     path in a private temporary directory and its own epmd.
//
// The servers refuse messages above MaxMessageSize bytes (Redis: arguments
// above RedisMaxBulkLen), so that tests of what a broker refuses need no
// large payloads.
//
// RestartableRedis, RestartableRabbitMQ and RestartablePostgres (and, in
// their adapters' modules, natsserver.RestartableNATS and
// kafkaserver.RestartableKafka) give a test a server of its own that it
// stops and starts again on the same address with its data (see
// Restartable).
//
// When a server binary is missing the test is skipped with a hint on how to
// install it, or fails when the environment variable CI is "true".
// bash .ci/install-brokers.sh installs both Debian packages.
//
// NATS and Kafka run in process, from Go modules (nats-server, franz-go's
// kfake). Their starters live in the modules of their adapters
// (bus/broker/natsbroker/internal/natsserver,
// bus/broker/kafkabroker/internal/kafkaserver), so that this package, which
// is in the root module, needs nothing but the standard library, and no
// module lists a test server it does not use.
package servers

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edupulse/eventbus/internal/childproc"
)

// MaxMessageSize is the largest message the NATS (max_payload), Kafka
// (message.max.bytes) and RabbitMQ (max_message_size) servers accept.
const MaxMessageSize = 64 << 10

// RedisMaxBulkLen is the largest argument the Redis server accepts
// (proto-max-bulk-len; Redis allows no less than 1 MiB).
const RedisMaxBulkLen = 1 << 20

const (
	// readyTimeout bounds waiting for a server to accept connections.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds waiting for a server to exit after its stop signal.
	stopTimeout = 15 * time.Second
)

// missing skips the test, or fails it when the environment variable CI is
// "true", because the server binary of a Debian package is not installed.
func missing(tb testing.TB, pkg string, err error) {
	tb.Helper()
	msg := fmt.Sprintf("servers: %s is not installed (%v); run: apt-get install -y %s (or bash .ci/install-brokers.sh)", pkg, err, pkg)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// lookPath finds a binary of a Debian package on PATH, skipping or failing
// the test when it is missing.
func lookPath(tb testing.TB, pkg, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(tb, pkg, err)
	}
	return p
}

// freePort returns a loopback TCP port nobody listens on right now, outside
// the given ranges ([lo, hi] pairs).
func freePort(avoid ...[2]int) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("servers: find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("servers: release port %d: %w", port, err)
		}
		ok := true
		for _, r := range avoid {
			if port >= r[0] && port <= r[1] {
				ok = false
			}
		}
		if ok {
			return port, nil
		}
	}
	return 0, errors.New("servers: no free port outside the avoided ranges")
}

// process is a server child process in a process group of its own, killed
// (SIGTERM) if the test binary dies.
type process struct {
	*childproc.Process
	name string
	out  *tailBuffer
}

// startProcess starts cmd in its own process group (see package childproc).
func startProcess(name string, cmd *exec.Cmd) (*process, error) {
	p := &process{name: name, out: &tailBuffer{max: 16 << 10}}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	proc, err := childproc.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("servers: %s: %w", name, err)
	}
	p.Process = proc
	return p, nil
}

// stop sends sig, waits for the process to exit (SIGKILL after
// stopTimeout), then kills whatever is left of its process group.
func (p *process) stop(sig syscall.Signal) error {
	pid := p.Cmd.Process.Pid
	var err error
	if !p.Exited() {
		_ = p.Cmd.Process.Signal(sig)
		select {
		case <-p.Done():
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			select {
			case <-p.Done():
				err = fmt.Errorf("servers: %s (pid %d) did not exit within %v of %v; killed", p.name, pid, stopTimeout, sig)
			case <-time.After(stopTimeout):
				return fmt.Errorf("servers: %s (pid %d) did not exit after SIGKILL", p.name, pid)
			}
		}
	}
	// Children that outlived the leader, if any.
	if kerr := syscall.Kill(-pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
		err = errors.Join(err, fmt.Errorf("servers: kill process group %d: %w", pid, kerr))
	}
	return err
}

// waitTCP polls until check succeeds against 127.0.0.1:port, the process
// exits or the timeout passes.
func waitTCP(p *process, port int, timeout time.Duration, check func(net.Conn) error) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if check != nil {
				err = check(c)
			}
			_ = c.Close()
			if err == nil {
				return nil
			}
		}
		lastErr = err
		if p.Exited() {
			return fmt.Errorf("%s exited before accepting connections (%v); output:\n%s", p.name, p.Err(), p.out.String())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s after %v (%v); output:\n%s", p.name, addr, timeout, lastErr, p.out.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}
