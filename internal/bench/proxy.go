package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// delayProxy is a TCP proxy on loopback that delays every byte by a fixed
// one-way delay in each direction, as a network link with that latency and
// ample bandwidth would: each chunk read from one side is written to the
// other at its arrival time plus the delay. Reading goes on while earlier
// chunks wait, so the delay adds latency, not a cap on throughput, and the
// bytes keep their order.
//
// Waiting uses nanosleep on the writing goroutine's thread rather than a Go
// timer: the runtime sleeps in whole milliseconds when idle, which would
// add up to a millisecond to a 1 ms delay. How late the chunks were
// written all the same is recorded (see lateness).
type delayProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64 // nanoseconds

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	late  []time.Duration // since the last takeLateness
	wg    sync.WaitGroup
}

// proxyChunkQueue is how many chunks a direction holds in flight before
// the reading side waits: with 64 KiB reads, up to 256 MiB.
const proxyChunkQueue = 4096

// proxyReadSize is the largest chunk read at once.
const proxyReadSize = 64 << 10

// newDelayProxy listens on a free loopback port and forwards every
// connection to target with the one-way delay d in each direction. An
// empty target must be set with setTarget before the first connection.
func newDelayProxy(target string, d time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &delayProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.delay.Store(int64(d))
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr is the proxy's listening address, host:port.
func (p *delayProxy) addr() string { return p.ln.Addr().String() }

// setDelay sets the one-way delay of the bytes that arrive from now on.
func (p *delayProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

// setTarget sets where new connections go.
func (p *delayProxy) setTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		s, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, s) {
			_ = c.Close()
			_ = s.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

// track registers a pair of connections, or reports false when the proxy
// is closed.
func (p *delayProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

type proxyChunk struct {
	b       []byte
	due     time.Time
	delayed bool
}

// pipe copies src to dst, each chunk delayed by the delay from its
// arrival.
func (p *delayProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	q := make(chan proxyChunk, proxyChunkQueue)
	done := make(chan struct{})
	go func() { // the writing side
		defer close(done)
		for c := range q {
			if c.delayed {
				sleepUntil(c.due)
				late := time.Since(c.due)
				p.mu.Lock()
				p.late = append(p.late, late)
				p.mu.Unlock()
			}
			if _, err := dst.Write(c.b); err != nil {
				_ = src.Close()
				_ = dst.Close()
				for range q { // let the reader finish
				}
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	buf := make([]byte, proxyReadSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			d := time.Duration(p.delay.Load())
			q <- proxyChunk{b: slices.Clone(buf[:n]), due: time.Now().Add(d), delayed: d > 0}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	p.mu.Lock()
	delete(p.conns, src)
	p.mu.Unlock()
}

// sleepUntil blocks the calling goroutine's thread until t (nanosleep: the
// kernel's timer slack, about 50 µs, rather than the Go runtime's
// millisecond when it is idle).
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		if err := syscall.Nanosleep(&ts, nil); err != nil && !errors.Is(err, syscall.EINTR) {
			time.Sleep(d)
		}
	}
}

// takeLateness returns how late the chunks written since the last call
// were written, beyond their due time.
func (p *delayProxy) takeLateness() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.late
	p.late = nil
	return l
}

// close stops the proxy and closes its connections.
func (p *delayProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}
