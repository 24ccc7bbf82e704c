package brokertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// Restarter is a broker of one test's own that the test stops and starts
// again, as an operator restarting it would.
type Restarter interface {
	// URL is the broker's URL, the same before and after a restart.
	URL() string
	// Stop stops the broker: its clients lose their connections.
	Stop() error
	// Start starts it again on the same address, with the streams, queues,
	// messages and consumer groups it had, and returns once it accepts
	// connections.
	Start() error
}

const (
	// restarts is how many times the restart test restarts the broker.
	restarts = 5
	// resumeWithin bounds the time from the broker being back to the
	// delivery of an event published then.
	resumeWithin = 5 * time.Second
	// restartOutage is how long the broker stays stopped.
	restartOutage = time.Second
	// restartTraffic is how long events flow between two restarts, so that
	// messages are in flight (handled, unacknowledged) when the broker
	// stops.
	restartTraffic = 500 * time.Millisecond
	// restartProducerPause is the pause between two transactions of the
	// steady producer.
	restartProducerPause = 50 * time.Millisecond
	// restartBurst is how many events are published at once before each
	// stop: more than a consumer holds unacknowledged (NATS's
	// max_ack_pending, 64 by default), so that the broker stops with the
	// consumer busy and it is still busy when the broker is back (NATS's
	// acks fail in that window, until JetStream is ready). The events
	// published after the restart wait behind what is left of it: on a
	// heavily loaded machine, that is most of the time measured.
	restartBurst = 120
)

// testRestarts restarts the broker several times in a row under a running
// relay and consumer, with the adapter's default settings, while events are
// published steadily: after each restart, an event published once the
// broker is back must be applied within resumeWithin, the application must
// keep running, and in the end every event published is applied once.
func testRestarts(t *testing.T, f Features) {
	switch {
	case f.Restartable != nil:
	case f.NotRestartable != "":
		t.Skip(f.NotRestartable)
	default:
		t.Fatal("brokertest: set Features.Restartable, or Features.NotRestartable with the reason")
	}
	b := f.Restartable(t)
	pool := newDB(t)
	app := startApp(t, b.URL(), pool)
	ctx := context.Background()

	// One event through before the first restart: the consumer's
	// subscriptions exist.
	begin := time.Now()
	t.Logf("first event applied %v after publishing", publishAndWait(t, app, pool, f.Timeout).Sub(begin).Round(time.Millisecond))

	// The steady producer: one transaction of two events every
	// restartProducerPause until stopped.
	prodCtx, stopProducer := context.WithCancel(ctx)
	var (
		mu        sync.Mutex
		published []uuid.UUID
		prodErr   error
		paused    bool // while the broker is down: the backlog would grow with the outage
		prodDone  = make(chan struct{})
	)
	pause := func(p bool) {
		mu.Lock()
		paused = p
		mu.Unlock()
	}
	go func() {
		defer close(prodDone)
		for prodCtx.Err() == nil {
			mu.Lock()
			skip := paused
			mu.Unlock()
			if skip {
				select {
				case <-prodCtx.Done():
				case <-time.After(restartProducerPause):
				}
				continue
			}
			evs := edupulseScenario(1, 0)[:2] // a pulse created, a lesson published
			err := app.Outbox.InTx(prodCtx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil })
			mu.Lock()
			switch {
			case err == nil:
				for _, ev := range evs {
					published = append(published, ev.Envelope().ID)
				}
			case prodCtx.Err() == nil:
				prodErr = err
			}
			mu.Unlock()
			if err != nil {
				return
			}
			select {
			case <-prodCtx.Done():
			case <-time.After(restartProducerPause):
			}
		}
	}()
	defer func() {
		stopProducer()
		<-prodDone
	}()

	var worst time.Duration
	var burst []uuid.UUID
	for i := range restarts {
		// Traffic, so that messages are in flight when the broker stops:
		// the steady producer's, and a burst, some of which is applied.
		select {
		case <-prodDone:
		case <-time.After(restartTraffic):
		}
		ids := publishBurst(t, app, pool, restartBurst)
		burst = append(burst, ids...)
		waitSome(t, app, pool, ids, restartBurst/6, f.Timeout)
		begin := time.Now()
		pause(true)
		if err := b.Stop(); err != nil {
			t.Fatalf("restart %d: stop the broker: %v", i+1, err)
		}
		stopped := time.Now()
		// Events for the relay to fail on, a few: the backlog must not
		// grow with the time the broker takes to start, which the test
		// does not measure.
		burst = append(burst, publishBurst(t, app, pool, 4)...)
		time.Sleep(restartOutage) // the outage
		if err := b.Start(); err != nil {
			t.Fatalf("restart %d: start the broker again: %v", i+1, err)
		}
		back := time.Now()
		took := publishAndWait(t, app, pool, f.Timeout).Sub(back)
		pause(false)
		worst = max(worst, took)
		t.Logf("restart %d: stopped in %v, down %v, started in %v; an event published then was applied %v after the broker was back",
			i+1, stopped.Sub(begin).Round(time.Millisecond), back.Sub(stopped).Round(time.Millisecond),
			back.Sub(stopped.Add(restartOutage)).Round(time.Millisecond), took.Round(time.Millisecond))
		if took > resumeWithin {
			t.Errorf("restart %d: delivery resumed %v after the broker was back, want within %v", i+1, took.Round(time.Millisecond), resumeWithin)
		}
	}
	stopProducer()
	<-prodDone
	mu.Lock()
	defer mu.Unlock()
	if prodErr != nil {
		t.Fatalf("the producer failed: %v", prodErr)
	}
	t.Logf("%d restarts: delivery resumed at worst %v after the broker was back; %d events published meanwhile",
		restarts, worst.Round(time.Millisecond), len(published))

	// Every event published is applied, once.
	published = append(published, burst...)
	begin = time.Now()
	effs := waitEffects(t, app, pool, len(published)+restarts+1, f.Timeout)
	t.Logf("the %d events published were applied %v later", len(published), time.Since(begin).Round(time.Millisecond))
	applied := map[uuid.UUID]int{}
	for _, e := range effs {
		applied[e.ID] = e.Applied
	}
	for _, id := range published {
		switch n := applied[id]; n {
		case 1:
		case 0:
			t.Errorf("event %s published during the restarts was never applied", id)
		default:
			t.Errorf("event %s applied %d times despite the inbox", id, n)
		}
	}
	select {
	case <-app.done:
		t.Fatalf("the application stopped: %v", app.err())
	default:
	}
}

// publishAndWait publishes one event and returns when it saw it applied. It
// fails the test when the application stops or timeout passes first.
func publishAndWait(t *testing.T, app *App, pool *pgxpool.Pool, timeout time.Duration) time.Time {
	t.Helper()
	ctx := context.Background()
	// On the topic of the traffic, where messages were in flight.
	ev := gen.NewPulseCreated(uuid.New(), uuid.New(), "survived a restart", time.Now().UTC().Truncate(time.Microsecond))
	begin := time.Now()
	if err := app.Outbox.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
		t.Fatalf("publish: %v", err)
	}
	deadline := begin.Add(timeout)
	for {
		var n int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM effects WHERE event_id = $1", ev.Envelope().ID).Scan(&n)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("query effects: %v", err)
		}
		if n > 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s not applied within %v", ev.Envelope().ID, timeout)
		}
		select {
		case <-app.done:
			t.Fatalf("the application stopped: %v", app.err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// publishBurst publishes n events on one topic (pulses created, each of its
// own aggregate, so spread over the relay's lanes) in one transaction, and
// returns their ids.
func publishBurst(t *testing.T, app *App, pool *pgxpool.Pool, n int) []uuid.UUID {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	evs := make([]bus.Event, n)
	ids := make([]uuid.UUID, n)
	for i := range evs {
		evs[i] = gen.NewPulseCreated(uuid.New(), uuid.New(), "burst", now)
		ids[i] = evs[i].Envelope().ID
	}
	if err := app.Outbox.InTx(context.Background(), pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return evs, nil }); err != nil {
		t.Fatalf("publish a burst: %v", err)
	}
	return ids
}

// waitSome waits until at least n of the events ids are applied.
func waitSome(t *testing.T, app *App, pool *pgxpool.Pool, ids []uuid.UUID, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var got int
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM effects WHERE event_id = ANY($1)", ids).Scan(&got); err != nil {
			t.Fatalf("query effects: %v", err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events applied after %v", got, n, timeout)
		}
		select {
		case <-app.done:
			t.Fatalf("the application stopped: %v", app.err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
