package bus_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgProxy forwards TCP connections to a PostgreSQL server, so that a test
// can take the database away from one pool without stopping the server that
// other tests share:
//   - Cut closes every forwarded connection and refuses new ones, until
//     Restore listens again on the same address;
//   - DropNextCommitAnswer makes it lose the server's answer to the next
//     COMMIT: the server receives the COMMIT and commits, and the client
//     sees its connection drop before it learns the outcome.
type pgProxy struct {
	t      testing.TB
	target string // host:port of the server
	addr   string // host:port the proxy listens on

	mu      sync.Mutex
	ln      net.Listener // nil while cut
	conns   map[*proxiedConn]struct{}
	stalled chan struct{} // while not nil, nothing is forwarded until it is closed

	dropCommit atomic.Bool   // armed by DropNextCommitAnswer
	cutAfter   atomic.Bool   // cut the proxy when the answer is dropped
	dropped    chan struct{} // receives when a COMMIT's answer was dropped
}

type proxiedConn struct {
	client, server net.Conn
	commitSent     atomic.Bool // a COMMIT whose answer must be lost went to the server
}

func (c *proxiedConn) close() {
	_ = c.client.Close()
	_ = c.server.Close()
}

// newPgProxy starts a proxy to the server of pool and returns it with a pool
// of at most maxConns connections through it, closed when the test ends.
func newPgProxy(t testing.TB, pool *pgxpool.Pool, maxConns int32) (*pgProxy, *pgxpool.Pool) {
	t.Helper()
	cc := pool.Config().ConnConfig
	if len(cc.Host) > 0 && cc.Host[0] == '/' {
		t.Skipf("the test database is on a unix socket (%s): the TCP proxy needs a TCP server", cc.Host)
	}
	p := &pgProxy{t: t, target: net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))),
		conns: map[*proxiedConn]struct{}{}, dropped: make(chan struct{}, 16)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.close)

	cfg := pool.Config().Copy()
	host, port, _ := net.SplitHostPort(p.addr)
	portN, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(portN)
	cfg.ConnConfig.Fallbacks = nil
	cfg.MaxConns = maxConns
	proxied, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("proxy: pool: %v", err)
	}
	t.Cleanup(proxied.Close) // before the proxy closes
	return p, proxied
}

func (p *pgProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return // closed by Cut or at the end of the test
			}
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = client.Close()
				continue
			}
			c := &proxiedConn{client: client, server: server}
			p.mu.Lock()
			if p.ln != ln { // cut meanwhile
				p.mu.Unlock()
				c.close()
				continue
			}
			p.conns[c] = struct{}{}
			p.mu.Unlock()
			go p.clientToServer(c)
			go p.serverToClient(c)
		}
	}()
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *pgProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.close()
		delete(p.conns, c)
	}
}

// Stall makes the server look hung: connections are still accepted, but
// nothing is forwarded, either way, until Unstall; then what was held goes
// through, as it would from a server that resumes.
func (p *pgProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
}

// Unstall forwards again.
func (p *pgProxy) Unstall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
}

// waitUnstalled blocks while the proxy is stalled.
func (p *pgProxy) waitUnstalled() {
	p.mu.Lock()
	ch := p.stalled
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// Restore accepts connections again, on the same address.
func (p *pgProxy) Restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// DropNextCommitAnswer arms the proxy: the next COMMIT sent through it
// reaches the server, and the connection is closed as soon as the server
// answers, before the client reads the answer; with thenCut, the proxy is
// also cut at that moment, before the client can reconnect. Dropped
// receives then.
func (p *pgProxy) DropNextCommitAnswer(thenCut bool) {
	p.cutAfter.Store(thenCut)
	p.dropCommit.Store(true)
}

// Dropped receives once per COMMIT answer dropped.
func (p *pgProxy) Dropped() <-chan struct{} { return p.dropped }

func (p *pgProxy) close() {
	p.Unstall()
	p.Cut()
}

func (p *pgProxy) forget(c *proxiedConn) {
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Protocol codes of the untyped messages a client may send first.
const (
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
	pgCancelRequest = 80877102
)

// clientToServer forwards the client's messages one at a time, so that it
// sees every simple-protocol query.
func (p *pgProxy) clientToServer(c *proxiedConn) {
	defer p.forget(c)
	// Untyped messages first: SSL or GSS encryption requests (answered by
	// the server with one byte), then the startup message.
	for {
		var head [8]byte
		if _, err := io.ReadFull(c.client, head[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(head[:4]))
		code := binary.BigEndian.Uint32(head[4:])
		if n < 8 {
			return
		}
		msg := make([]byte, n)
		copy(msg, head[:])
		if _, err := io.ReadFull(c.client, msg[8:]); err != nil {
			return
		}
		p.waitUnstalled()
		if _, err := c.server.Write(msg); err != nil {
			return
		}
		if code == pgCancelRequest {
			return
		}
		if code != pgSSLRequest && code != pgGSSENCRequest {
			break // the startup message
		}
	}
	for {
		var head [5]byte
		if _, err := io.ReadFull(c.client, head[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(head[1:]))
		if n < 4 {
			return
		}
		msg := make([]byte, 1+n)
		copy(msg, head[:])
		if _, err := io.ReadFull(c.client, msg[5:]); err != nil {
			return
		}
		p.waitUnstalled()
		if head[0] == 'Q' && isCommit(msg[5:]) && p.dropCommit.CompareAndSwap(true, false) {
			c.commitSent.Store(true)
		}
		if _, err := c.server.Write(msg); err != nil {
			return
		}
	}
}

func isCommit(query []byte) bool {
	q := bytes.TrimSpace(bytes.TrimRight(query, "\x00"))
	q = bytes.TrimSuffix(q, []byte(";"))
	return bytes.EqualFold(q, []byte("commit"))
}

func (p *pgProxy) serverToClient(c *proxiedConn) {
	defer p.forget(c)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.server.Read(buf)
		if n > 0 && c.commitSent.Load() {
			// The server answered the COMMIT: it has committed (or failed)
			// and the client will never know.
			if p.cutAfter.Load() {
				p.Cut()
			}
			c.close()
			p.dropped <- struct{}{}
			return
		}
		if n > 0 {
			p.waitUnstalled()
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
