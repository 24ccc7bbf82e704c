package servers

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Redis starts a private redis-server (no persistence, data directory in a
// temporary directory) on a free loopback port and returns its URL
// (redis://127.0.0.1:PORT/0). Its proto-max-bulk-len is RedisMaxBulkLen. It
// stops at the test's cleanup.
//
// It needs the redis-server binary (Debian package redis-server).
func Redis(tb testing.TB) string {
	tb.Helper()
	bin := lookPath(tb, "redis-server", "redis-server")
	dir := tb.TempDir()
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--protected-mode", "yes", "--proto-max-bulk-len", strconv.Itoa(RedisMaxBulkLen), "--daemonize", "no", "--loglevel", "warning")
		cmd.Dir = dir
		p, err := startProcess("redis-server", cmd)
		if err != nil {
			tb.Fatal(err)
		}
		if err := waitTCP(p, port, readyTimeout, redisPing); err != nil {
			_ = p.stop(syscall.SIGKILL)
			lastErr = err
			if strings.Contains(p.out.String(), "in use") {
				continue // the port was taken meanwhile: try another
			}
			break
		}
		tb.Cleanup(func() {
			if err := p.stop(syscall.SIGTERM); err != nil {
				tb.Errorf("servers: stop redis-server: %v", err)
			}
		})
		return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	}
	tb.Fatalf("servers: redis-server: %v", lastErr)
	return ""
}

func redisPing(c net.Conn) error {
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
