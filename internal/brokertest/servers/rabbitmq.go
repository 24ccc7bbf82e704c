package servers

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// rabbitmqServerBin is the Debian package's server script: it runs the node
// in the foreground as the calling user, unlike /usr/sbin/rabbitmq-server,
// which switches to the rabbitmq user and uses the /var paths.
const rabbitmqServerBin = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// rabbitmqCLIPorts is the range RabbitMQ's CLI tools use by default: the
// AMQP port is kept out of it.
var rabbitmqCLIPorts = [2]int{35672, 35682}

// rabbit is the RabbitMQ server shared by the tests of a test binary: it
// boots in several seconds, so it is started once and stopped when the last
// test using it ends.
var rabbit struct {
	mu   sync.Mutex
	refs int
	srv  *rabbitServer
}

// RabbitMQ returns the URL (amqp://guest:guest@127.0.0.1:PORT/) of a private
// RabbitMQ server on a free loopback port, starting it if no test of this
// binary runs one. The server is shared by the tests that call RabbitMQ while
// it runs and stops when the last of them ends: to start it once for several
// subtests, call RabbitMQ in the parent test too. Isolate tests sharing it
// with unique queue and exchange names.
//
// Its max_message_size is MaxMessageSize.
//
// It needs the Debian package rabbitmq-server (and its epmd), and takes 5-10
// seconds to boot.
func RabbitMQ(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(rabbitmqServerBin); err != nil {
		missing(tb, "rabbitmq-server", err)
	}
	epmd := lookPath(tb, "rabbitmq-server", "epmd") // from its dependency erlang-base

	rabbit.mu.Lock()
	defer rabbit.mu.Unlock()
	if rabbit.srv == nil {
		srv, err := startRabbitMQ(epmd)
		if err != nil {
			tb.Fatalf("servers: %v", err)
		}
		rabbit.srv = srv
	}
	rabbit.refs++
	srv := rabbit.srv
	tb.Cleanup(func() {
		rabbit.mu.Lock()
		defer rabbit.mu.Unlock()
		rabbit.refs--
		if rabbit.refs > 0 {
			return
		}
		rabbit.srv = nil
		if err := srv.stop(); err != nil {
			tb.Errorf("servers: %v", err)
		}
	})
	return srv.url
}

type rabbitServer struct {
	dir  string
	url  string
	epmd *process
	node *process

	env      []string // the node's environment, for a restart
	amqpPort int
}

// startRabbitMQ starts epmd and a RabbitMQ node, retrying on other ports if
// one was taken meanwhile.
func startRabbitMQ(epmdBin string) (*rabbitServer, error) {
	var errs []error
	for range 3 {
		s, err := tryStartRabbitMQ(epmdBin)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if !strings.Contains(err.Error(), "eaddrinuse") && !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func tryStartRabbitMQ(epmdBin string) (s *rabbitServer, err error) {
	dir, err := os.MkdirTemp("", "eventbus-rabbitmq-")
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	s = &rabbitServer{dir: dir}
	defer func() {
		if err != nil {
			_ = s.stop()
		}
	}()
	var ports [4]int // epmd, amqp, distribution, CLI distribution
	for i := range ports {
		p, err := freePort(rabbitmqCLIPorts)
		if err != nil {
			return s, err
		}
		for _, q := range ports[:i] {
			if p == q {
				p, err = freePort(rabbitmqCLIPorts, [2]int{q, q})
				if err != nil {
					return s, err
				}
			}
		}
		ports[i] = p
	}
	epmdPort, amqpPort, distPort, ctlPort := ports[0], ports[1], ports[2], ports[3]

	// Our own epmd: the one Erlang would start outlives the node and binds
	// the default port for every user.
	epmdCmd := exec.Command(epmdBin, "-address", "127.0.0.1", "-port", strconv.Itoa(epmdPort))
	epmdCmd.Dir = dir
	if s.epmd, err = startProcess("epmd", epmdCmd); err != nil {
		return s, fmt.Errorf("rabbitmq: %w", err)
	}
	if err := waitTCP(s.epmd, epmdPort, readyTimeout, nil); err != nil {
		return s, fmt.Errorf("rabbitmq: %w", err)
	}

	files := map[string]string{
		"rabbitmq.conf":   "disk_free_limit.absolute = 10MB\nmax_message_size = " + strconv.Itoa(MaxMessageSize) + "\n",
		"enabled_plugins": "[].\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return s, fmt.Errorf("rabbitmq: %w", err)
		}
	}
	env := []string{
		"HOME=" + dir,
		"RABBITMQ_NODENAME=eventbus-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(amqpPort) + "@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(amqpPort),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"RABBITMQ_CTL_DIST_PORT_MIN=" + strconv.Itoa(ctlPort),
		"RABBITMQ_CTL_DIST_PORT_MAX=" + strconv.Itoa(ctlPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_EPMD_PORT=" + strconv.Itoa(epmdPort),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbitmq.pid"),
		"RABBITMQ_CONF_ENV_FILE=/dev/null",
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PLUGINS_EXPAND_DIR=" + filepath.Join(dir, "plugins-expand"),
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "HOME" && !strings.HasPrefix(k, "RABBITMQ_") && !strings.HasPrefix(k, "ERL_") {
			env = append(env, kv)
		}
	}
	s.env, s.amqpPort = env, amqpPort
	if err := s.startNode(); err != nil {
		return s, err
	}
	s.url = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", amqpPort)
	return s, nil
}

// amqpHandshake sends the AMQP 0-9-1 protocol header and expects the
// server's first frame (Connection.Start, a method frame).
func amqpHandshake(c net.Conn) error {
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 1 {
		return fmt.Errorf("unexpected AMQP frame type %d", b[0])
	}
	return nil
}

// startNode starts the node and waits until it accepts AMQP connections.
func (s *rabbitServer) startNode() error {
	node := exec.Command(rabbitmqServerBin)
	node.Dir = s.dir
	node.Env = s.env
	var err error
	if s.node, err = startProcess("rabbitmq-server", node); err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	if err := waitTCP(s.node, s.amqpPort, readyTimeout, amqpHandshake); err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	return nil
}

// stop stops the node (SIGTERM: a clean shutdown, about a second), then
// epmd, and removes the directory.
func (s *rabbitServer) stop() error {
	var errs []error
	if s.node != nil {
		if err := s.node.stop(syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("rabbitmq: stop node: %w", err))
		}
	}
	if s.epmd != nil {
		if err := s.epmd.stop(syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("rabbitmq: stop epmd: %w", err))
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("rabbitmq: %w", err))
	}
	return errors.Join(errs...)
}

// ErrNotInstalled is returned by StartRabbitMQ when the server's Debian
// package is not installed.
var ErrNotInstalled = errors.New("servers: not installed")

// RabbitMQServer is a private RabbitMQ server started by StartRabbitMQ.
type RabbitMQServer struct {
	// URL is amqp://guest:guest@127.0.0.1:PORT/.
	URL string
	s   *rabbitServer
}

// StartRabbitMQ starts a private RabbitMQ server as RabbitMQ does, for
// programs that are not tests (the bench); the caller stops it with Stop.
// The error wraps ErrNotInstalled when rabbitmq-server or its epmd is
// missing.
func StartRabbitMQ() (*RabbitMQServer, error) {
	if _, err := os.Stat(rabbitmqServerBin); err != nil {
		return nil, fmt.Errorf("%w: rabbitmq-server (%v)", ErrNotInstalled, err)
	}
	epmd, err := exec.LookPath("epmd")
	if err != nil {
		return nil, fmt.Errorf("%w: epmd of rabbitmq-server (%v)", ErrNotInstalled, err)
	}
	s, err := startRabbitMQ(epmd)
	if err != nil {
		return nil, err
	}
	return &RabbitMQServer{URL: s.url, s: s}, nil
}

// Pid is the process id of the node, the leader of a process group
// holding all its processes.
func (r *RabbitMQServer) Pid() int { return r.s.node.Cmd.Process.Pid }

// Stop stops the server and removes its files.
func (r *RabbitMQServer) Stop() error { return r.s.stop() }
