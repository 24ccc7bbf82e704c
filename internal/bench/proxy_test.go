package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every connection's bytes back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDelayProxy checks the proxy's promises: a round trip takes at least
// twice the one-way delay; chunks sent one after the other are each
// delayed from their own arrival, not queued behind the previous one's
// delay (a link's latency, not a cap on its throughput); bytes keep their
// order; the lateness of the writes is recorded.
func TestDelayProxy(t *testing.T) {
	const d = 50 * time.Millisecond
	p, err := newDelayProxy(echoServer(t), d)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	begin := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	if rtt := time.Since(begin); rtt < 2*d {
		t.Errorf("round trip %v, want at least %v", rtt, 2*d)
	}

	// 100 chunks, one every 2 ms: through a link of 50 ms they all arrive
	// about 100 ms after the last was sent (0.3 s in all); delayed one
	// after the other, the last would come after at least 100 × 50 ms.
	const chunks, every = 100, 2 * time.Millisecond
	var sent bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, chunks*8)
		_, _ = io.ReadFull(c, b)
		got <- b
	}()
	begin = time.Now()
	for i := range chunks {
		chunk := []byte{byte(i), 1, 2, 3, 4, 5, 6, byte(255 - i)}
		sent.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every)
	}
	var echoed []byte
	select {
	case echoed = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no echo after 30 s")
	}
	took := time.Since(begin)
	if !bytes.Equal(echoed, sent.Bytes()) {
		t.Errorf("echoed bytes differ from those sent (order or content)")
	}
	if serial := chunks * d; took >= serial {
		t.Errorf("%d chunks sent every %v took %v through a %v link: delayed one after the other (%v), not each from its arrival", chunks, every, took, d, serial)
	}
	t.Logf("%d chunks sent every %v echoed in %v through a %v link", chunks, every, took, d)
	late := p.takeLateness()
	if len(late) < 2 {
		t.Errorf("lateness of %d writes recorded, want one per chunk written", len(late))
	}
	for _, l := range late {
		if l < 0 {
			t.Errorf("negative lateness %v", l)
		}
	}
}
