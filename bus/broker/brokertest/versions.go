package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// gradedV1 and gradedV2 are two versions of one wire name, declared here
// because the EduPulse events have one version each. Version 2 adds a
// field.
type gradedV1 struct {
	env    bus.Envelope
	QuizID string `json:"quiz_id"`
	Grade  string `json:"grade"`
}

type gradedV2 struct {
	env    bus.Envelope
	QuizID string `json:"quiz_id"`
	Grade  string `json:"grade"`
	Score  int    `json:"score"`
}

const gradedName = "brokertest.quiz.graded"

func (gradedV1) EventName() string        { return gradedName }
func (gradedV1) EventVersion() int        { return 1 }
func (e gradedV1) Envelope() bus.Envelope { return e.env }
func (gradedV2) EventName() string        { return gradedName }
func (gradedV2) EventVersion() int        { return 2 }
func (e gradedV2) Envelope() bus.Envelope { return e.env }

// versionsRegistry holds both versions, of one aggregate type: the routing
// sends them to one topic, where only their version tells them apart.
var versionsRegistry = bus.MustNewRegistry(
	bus.EventType{Name: gradedName, Version: 1, AggregateType: "quiz", GoType: "gradedV1",
		Decode: func(env bus.Envelope, payload []byte) (bus.Event, error) {
			e := gradedV1{env: env}
			if err := json.Unmarshal(payload, &e); err != nil {
				return nil, err
			}
			return e, nil
		}},
	bus.EventType{Name: gradedName, Version: 2, AggregateType: "quiz", GoType: "gradedV2",
		Decode: func(env bus.Envelope, payload []byte) (bus.Event, error) {
			e := gradedV2{env: env}
			if err := json.Unmarshal(payload, &e); err != nil {
				return nil, err
			}
			return e, nil
		}},
)

// received records what one typed handler was given, by event id.
type received[T bus.Event] struct {
	mu  sync.Mutex
	got map[uuid.UUID]T
}

func (r *received[T]) add(ev T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[uuid.UUID]T{}
	}
	r.got[ev.Envelope().ID] = ev
}

func (r *received[T]) snapshot() map[uuid.UUID]T {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[uuid.UUID]T, len(r.got))
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// testVersions publishes both versions of one name, interleaved, through
// the outbox, the relay and the broker, to a consumer with a typed handler
// per version (On for version 1, OnTx for version 2): each event reaches
// the handler of its own version, with its own fields, and nothing fails or
// is dead-lettered.
func testVersions(t *testing.T, f Features, url string) {
	ctx := context.Background()
	pool := newDB(t)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := broker.Open(ctx, url, broker.Options{Logger: logger})
	if err != nil {
		t.Fatalf("open %s: %v", broker.Redact(url), err)
	}
	t.Cleanup(func() { // after the relay and the consumer stopped (cleanups run last first)
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	prefix := "t" + uuid.NewString()[:8] + "_"
	routing := bus.RouteByAggregateType(prefix)
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: versionsRegistry, Routing: routing})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscriber(prefix + "versions")
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.NewConsumer(bus.ConsumerConfig{
		Registry: versionsRegistry, Routing: routing, Subscriber: sub, Group: prefix + "versions",
		DeadLetter: b.Publisher(), DeadLetterTopic: prefix + "dead_letters", Pool: pool, Logger: logger,
		MaxRetries: 2, BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var v1 received[gradedV1]
	var v2 received[gradedV2]
	if err := bus.On(c, func(_ context.Context, e gradedV1) error { v1.add(e); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := bus.OnTx(c, func(_ context.Context, _ pgx.Tx, e gradedV2) ([]bus.Event, error) { v2.add(e); return nil, nil }); err != nil {
		t.Fatal(err)
	}
	relay, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: b.Publisher(), Logger: logger,
		PollInterval: 200 * time.Millisecond, BackoffInitial: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(runCtx)
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Errorf("relay or consumer: %v", err)
		}
	})
	g.Go(func() error { return c.Run(gctx) })
	select {
	case <-c.Running():
	case <-gctx.Done():
		t.Fatal("consumer stopped before it started")
	case <-time.After(f.Timeout):
		t.Fatalf("consumer did not start within %s", f.Timeout)
	}
	g.Go(func() error { return relay.Run(gctx) })

	// Both versions interleaved, in transactions of several events, some
	// of one aggregate (one lane, one order), some of others.
	const perVersion = 6
	quiz := uuid.NewString()
	want1, want2 := map[uuid.UUID]gradedV1{}, map[uuid.UUID]gradedV2{}
	var evs []bus.Event
	for i := range perVersion {
		agg := quiz
		if i%2 == 1 {
			agg = uuid.NewString()
		}
		e1 := gradedV1{env: bus.NewEnvelope("quiz", agg), QuizID: agg, Grade: fmt.Sprintf("v1-%d", i)}
		e2 := gradedV2{env: bus.NewEnvelope("quiz", agg), QuizID: agg, Grade: fmt.Sprintf("v2-%d", i), Score: 100 + i}
		want1[e1.env.ID], want2[e2.env.ID] = e1, e2
		evs = append(evs, e1, e2)
	}
	for i := 0; i < len(evs); i += 4 {
		batch := evs[i:min(i+4, len(evs))]
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil }); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	deadline := time.Now().Add(f.Timeout)
	for len(v1.snapshot()) < perVersion || len(v2.snapshot()) < perVersion {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: version 1 handler got %d, version 2 handler got %d of %d each; consumer stats %+v",
				f.Timeout, len(v1.snapshot()), len(v2.snapshot()), perVersion, c.Stats())
		}
		select {
		case <-gctx.Done():
			t.Fatalf("the relay or the consumer stopped: %v", g.Wait())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for id, got := range v1.snapshot() {
		want, ok := want1[id]
		if !ok {
			t.Errorf("version 1 handler got event %s, not a version 1 event of this test", id)
		} else if got.Grade != want.Grade || got.QuizID != want.QuizID || got.env.AggregateID != want.env.AggregateID {
			t.Errorf("version 1 handler got %+v, want %+v", got, want)
		}
	}
	for id, got := range v2.snapshot() {
		want, ok := want2[id]
		if !ok {
			t.Errorf("version 2 handler got event %s, not a version 2 event of this test", id)
		} else if got.Grade != want.Grade || got.Score != want.Score || got.QuizID != want.QuizID {
			t.Errorf("version 2 handler got %+v, want %+v", got, want)
		}
	}
	if st := c.Stats(); st.Failed != 0 || st.DeadLettered != 0 {
		t.Errorf("consumer stats %+v, want no failed attempt and no dead letter", st)
	}
}
