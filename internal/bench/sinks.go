package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edupulse/eventbus/gen"
)

// Sinks: where the relays publish.
const (
	// sinkGoChannel is Watermill's in-process GoChannel; a subscriber per
	// event topic acks at once and counts.
	sinkGoChannel = "gochannel"
	// sinkNATS is NATS JetStream (an embedded nats-server) through the
	// watermill-nats/v2 publisher with JetStream on: every Publish waits
	// for the stream's PubAck, the at-least-once configuration.
	sinkNATS = "nats"
	// sinkNATSAsync is NATS JetStream with asynchronous PubAcks: Publish
	// returns once the message is written to the connection, and the acks
	// are awaited at the end of the run. Faster, but a relay acking its
	// outbox rows before the broker did is no longer at-least-once on a
	// crash: an upper bound, not a configuration to ship.
	sinkNATSAsync = "nats-async"
)

// sinkRun is one run's view of a sink.
type sinkRun struct {
	pub message.Publisher
	// wait blocks until n events were delivered, ctx ends, or failed
	// yields a value.
	wait  func(ctx context.Context, failed <-chan error) error
	close func()
}

type sink interface {
	name() string
	// begin prepares a run that will deliver n events.
	begin(ctx context.Context, n int) (sinkRun, error)
	shutdown()
}

func newSink(ctx context.Context, name string, natsSrv **natsServer) (sink, error) {
	switch name {
	case sinkGoChannel:
		return goChannelSink{}, nil
	case sinkNATS, sinkNATSAsync:
		if *natsSrv == nil {
			srv, err := startNATS()
			if err != nil {
				return nil, err
			}
			*natsSrv = srv
		}
		return (*natsSrv).sink(name == sinkNATSAsync)
	}
	return nil, fmt.Errorf("unknown sink %q", name)
}

type goChannelSink struct{}

func (goChannelSink) name() string { return sinkGoChannel }
func (goChannelSink) shutdown()    {}

func (goChannelSink) begin(ctx context.Context, n int) (sinkRun, error) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	var count atomic.Int64
	done := make(chan struct{})
	subCtx, cancel := context.WithCancel(ctx)
	for _, topic := range gen.Registry().Names() {
		ch, err := gc.Subscribe(subCtx, topic)
		if err != nil {
			cancel()
			_ = gc.Close()
			return sinkRun{}, err
		}
		go func() {
			for msg := range ch {
				msg.Ack()
				if count.Add(1) == int64(n) {
					close(done)
				}
			}
		}()
	}
	return sinkRun{
		pub: gc,
		wait: func(ctx context.Context, failed <-chan error) error {
			return waitDone(ctx, done, failed, func() string { return fmt.Sprintf("%d of %d delivered", count.Load(), n) })
		},
		close: func() { cancel(); _ = gc.Close() },
	}, nil
}

// countingSink is a run whose publisher only counts what it is given.
func countingSink(n int) sinkRun {
	p := &countingPublisher{n: int64(n), done: make(chan struct{})}
	return sinkRun{
		pub: p,
		wait: func(ctx context.Context, failed <-chan error) error {
			return waitDone(ctx, p.done, failed, func() string { return fmt.Sprintf("%d of %d published", p.count.Load(), n) })
		},
		close: func() {},
	}
}

type countingPublisher struct {
	n     int64
	count atomic.Int64
	done  chan struct{}
}

func (p *countingPublisher) Publish(_ string, msgs ...*message.Message) error {
	if p.count.Add(int64(len(msgs))) >= p.n && p.count.Load()-int64(len(msgs)) < p.n {
		close(p.done)
	}
	return nil
}

func (p *countingPublisher) Close() error { return nil }

func waitDone(ctx context.Context, done <-chan struct{}, failed <-chan error, status func() string) error {
	select {
	case <-done:
		return nil
	case err := <-failed:
		if err == nil {
			err = errors.New("stopped early")
		}
		return fmt.Errorf("relay: %w (%s)", err, status())
	case <-ctx.Done():
		return fmt.Errorf("%w (%s)", ctx.Err(), status())
	}
}

// natsServer is an embedded nats-server with JetStream and one stream,
// EDUPULSE, holding the subjects edupulse.> (the event wire names: dotted
// names are subjects, not stream names).
type natsServer struct {
	srv *natsserver.Server
	dir string
	nc  *nats.Conn
	js  nats.JetStreamContext
}

const natsStream = "EDUPULSE"

func startNATS() (*natsServer, error) {
	dir, err := os.MkdirTemp("", "bench-nats-")
	if err != nil {
		return nil, err
	}
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		_ = os.RemoveAll(dir)
		return nil, errors.New("nats-server not ready after 10s")
	}
	s := &natsServer{srv: srv, dir: dir}
	if s.nc, err = nats.Connect(srv.ClientURL()); err != nil {
		s.shutdown()
		return nil, err
	}
	if s.js, err = s.nc.JetStream(); err != nil {
		s.shutdown()
		return nil, err
	}
	if _, err := s.js.AddStream(&nats.StreamConfig{Name: natsStream, Subjects: []string{"edupulse.>"},
		Storage: nats.FileStorage}); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("add stream: %w", err)
	}
	return s, nil
}

func (s *natsServer) shutdown() {
	if s.nc != nil {
		s.nc.Close()
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	_ = os.RemoveAll(s.dir)
}

// natsSink publishes to the EDUPULSE stream and counts what it stored.
type natsSink struct {
	srv   *natsServer
	async bool
	pub   message.Publisher
	// asyncPub is pub when async, for its failure count.
	asyncPub *asyncJSPublisher
}

func (s *natsServer) sink(async bool) (sink, error) {
	ns := &natsSink{srv: s, async: async}
	if async {
		nc, err := nats.Connect(s.srv.ClientURL())
		if err != nil {
			return nil, err
		}
		p := &asyncJSPublisher{nc: nc, m: &wmnats.NATSMarshaler{}}
		js, err := nc.JetStream(nats.PublishAsyncMaxPending(1024),
			nats.PublishAsyncErrHandler(func(nats.JetStream, *nats.Msg, error) { p.failed.Add(1) }))
		if err != nil {
			nc.Close()
			return nil, err
		}
		p.js = js
		ns.pub, ns.asyncPub = p, p
		return ns, nil
	}
	// The stock watermill-nats/v2 publisher with JetStream: the stream is
	// provisioned above (AutoProvision would take the dotted topic as a
	// stream name, which NATS refuses).
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{
		URL:       s.srv.ClientURL(),
		JetStream: wmnats.JetStreamConfig{AutoProvision: false},
	}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	ns.pub = pub
	return ns, nil
}

func (s *natsSink) name() string {
	if s.async {
		return sinkNATSAsync
	}
	return sinkNATS
}

func (s *natsSink) shutdown() { _ = s.pub.Close() }

func (s *natsSink) begin(ctx context.Context, n int) (sinkRun, error) {
	if err := s.srv.js.PurgeStream(natsStream); err != nil {
		return sinkRun{}, fmt.Errorf("purge stream: %w", err)
	}
	if s.asyncPub != nil {
		s.asyncPub.failed.Store(0)
	}
	stored := func() (uint64, error) {
		info, err := s.srv.js.StreamInfo(natsStream)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	return sinkRun{
		pub: s.pub,
		wait: func(ctx context.Context, failed <-chan error) error {
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			var last uint64
			for {
				select {
				case err := <-failed:
					return fmt.Errorf("relay: %w (%d of %d stored)", err, last, n)
				case <-ctx.Done():
					return fmt.Errorf("%w (%d of %d stored)", ctx.Err(), last, n)
				case <-t.C:
				}
				got, err := stored()
				if err != nil {
					return err
				}
				last = got
				if got >= uint64(n) {
					return nil
				}
				if s.asyncPub != nil && s.asyncPub.failed.Load() > 0 {
					return fmt.Errorf("%d async publishes failed", s.asyncPub.failed.Load())
				}
			}
		},
		close: func() {},
	}, nil
}

// asyncJSPublisher publishes to JetStream without waiting for each PubAck,
// in the watermill-nats wire format (NATSMarshaler: headers plus payload).
type asyncJSPublisher struct {
	nc     *nats.Conn
	js     nats.JetStreamContext
	m      wmnats.Marshaler
	failed atomic.Int64
}

func (p *asyncJSPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		nm, err := p.m.Marshal(topic, msg)
		if err != nil {
			return err
		}
		if _, err := p.js.PublishMsgAsync(nm, nats.StallWait(10*time.Second)); err != nil {
			return err
		}
	}
	return nil
}

func (p *asyncJSPublisher) Close() error { p.nc.Close(); return nil }
