// Package brokertest is the conformance suite every broker adapter passes:
// outbox → relay → broker → typed consumer for all EduPulse events, with
// duplicates skipped by the inbox, per-aggregate order where the broker
// promises it, poison messages dead-lettered without blocking the rest,
// consumer dead letters stored in PostgreSQL and replayed, or kept on the
// broker's dead-letter topic until read, an event the broker refuses for
// good dead-lettered by the relay while the events behind it go on, and
// delivery resuming within seconds each time the broker is restarted under
// a running relay and consumer (restart.go; Features.Restartable gives it a
// broker it can stop and start).
//
// Two versions of one event name, sharing a topic, each reach the typed
// handler of their own version.
//
// The suite runs one application function, App, against each broker URL,
// which is the proof that switching brokers takes only the URL.
//
// An adapter's test calls Run:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Features{
//			OrderPerAggregate: true,
//			// The test server's max_payload is 64 KiB.
//			Refusal: &brokertest.Refusal{Title: brokertest.OversizedTitle(64 << 10), Error: "maximum payload exceeded"},
//		}, func(t *testing.T) string { return "nats://" + startServer(t) })
//	}
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// Features says what a broker promises.
type Features struct {
	// OrderPerAggregate: one consumer group sees the events of one
	// aggregate, on one topic, in the order the relay published them.
	OrderPerAggregate bool
	// Timeout bounds each wait of the suite. Defaults to 60 seconds.
	Timeout time.Duration
	// Refusal describes an event the broker always refuses, for the test
	// that the relay dead-letters it and goes on. Set it or RefusesNothing.
	Refusal *Refusal
	// RefusesNothing says why the broker refuses no event (the refusal
	// test is then skipped with this reason).
	RefusesNothing string
	// DeadLetterReader is the consumer group that reads the dead letters a
	// consumer published to the broker before anyone subscribed to the
	// dead-letter topic (amqpbroker.RetainGroup). Empty: any group
	// subscribing later reads them.
	DeadLetterReader string
	// Restartable starts a broker of the test's own for the restart test
	// (restart.go), which stops and starts it. Set it or NotRestartable.
	Restartable func(t *testing.T) Restarter
	// NotRestartable says why the broker cannot be restarted (the restart
	// test is then skipped with this reason).
	NotRestartable string
	// Restarts is how many times the restart test restarts the broker
	// (default RestartsDefault, 5).
	Restarts int
}

// Refusal is an event a broker will always refuse: a PulseCreated with
// Title as its title, too large for the broker or a value it cannot store.
type Refusal struct {
	// Title is the title of the refused PulseCreated event.
	Title string
	// Error is a part of the broker's error, which the dead letter must
	// show.
	Error string
	// BrokerURL, when set, returns the URL of the broker for the refusal
	// test instead of Run's brokerURL: one configured to refuse the event.
	BrokerURL func(t *testing.T) string
}

// OversizedTitle returns a title of n bytes, for a Refusal of an event too
// large for a broker.
func OversizedTitle(n int) string { return strings.Repeat("x", n) }

// Run runs the conformance suite. brokerURL returns the URL of a broker
// for one subtest; it may start a server (and stop it at t.Cleanup) or
// return the URL of a shared one (topics and groups are unique per subtest).
func Run(t *testing.T, f Features, brokerURL func(t *testing.T) string) {
	if f.Timeout == 0 {
		f.Timeout = 60 * time.Second
	}
	t.Run("AllEventsOnceInEffect", func(t *testing.T) { testAllEvents(t, f, brokerURL(t)) })
	t.Run("DuplicatesSkippedByInbox", func(t *testing.T) { testDuplicates(t, f, brokerURL(t)) })
	t.Run("PoisonDeadLettered", func(t *testing.T) { testPoison(t, f, brokerURL(t)) })
	t.Run("VersionsToOwnHandlers", func(t *testing.T) { testVersions(t, f, brokerURL(t)) })
	runConsumerDeadLetters(t, f, brokerURL)
	t.Run("RefusedEventDeadLettered", func(t *testing.T) {
		switch {
		case f.Refusal != nil && f.Refusal.BrokerURL != nil:
			testRefused(t, f, f.Refusal.BrokerURL(t))
		case f.Refusal != nil:
			testRefused(t, f, brokerURL(t))
		case f.RefusesNothing != "":
			t.Skip(f.RefusesNothing)
		default:
			t.Fatal("brokertest: set Features.Refusal, or Features.RefusesNothing with the reason")
		}
	})
	t.Run("ResumesAfterRestarts", func(t *testing.T) { testRestarts(t, f) })
}

// AppConfig configures App.
type AppConfig struct {
	// BrokerURL is the only thing that changes between brokers.
	BrokerURL string
	// Pool is the application's database, migrated.
	Pool *pgxpool.Pool
	// Prefix makes topics and groups unique, so tests can share a broker.
	Prefix string
	// Logger for the framework.
	Logger *slog.Logger
	// DefaultRelay runs the relay with the default configuration (only
	// Pool, Publisher and Logger set) instead of the suite's faster
	// polling and backoff.
	DefaultRelay bool
	// DeadLetterStore is the consumer's (ConsumerConfig.DeadLetterStore);
	// the default keeps dead letters in Pool.
	DeadLetterStore bus.DeadLetterStore
	// Fail, when set, runs before the consumer's handler applies an event:
	// an error fails the handler.
	Fail func(bus.Event) error
}

// App is an application: it consumes EduPulse events into an effects table
// with an inbox handler, relays its outbox to the broker named by
// cfg.BrokerURL, and returns once ready. Its events are routed one topic per
// aggregate type, so one consumer sees an aggregate's events in order.
type App struct {
	Outbox   *bus.Outbox
	Broker   broker.Broker
	Consumer *bus.Consumer
	Topics   []string
	// DeadLetterTopic receives the consumer's dead letters.
	DeadLetterTopic string

	prefix string
	stop   func() error
	done   <-chan struct{} // closed when the relay or the consumer stopped
	err    func() error
}

// Topic of an event in App: the topic the outbox's routing gives its type.
func (a *App) Topic(ev bus.Event) string {
	topic, err := a.Outbox.Routing().Topic(a.Outbox.Registry(), ev)
	if err != nil {
		panic(err) // the suite sends only registered events
	}
	return topic
}

// StartApp starts App.
func StartApp(ctx context.Context, cfg AppConfig) (*App, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := broker.Open(ctx, cfg.BrokerURL, broker.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	prefix := cfg.Prefix + "_"
	// One routing for the outbox and the consumer.
	routing := bus.RouteByAggregateType(prefix)
	ob, err := bus.NewOutbox(ctx, cfg.Pool, bus.OutboxConfig{Registry: gen.Registry(), Routing: routing})
	if err != nil {
		b.Close()
		return nil, err
	}
	if _, err := cfg.Pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS effects (
		event_id UUID PRIMARY KEY, name TEXT NOT NULL, aggregate_id TEXT NOT NULL,
		applied INTEGER NOT NULL DEFAULT 1, seq BIGSERIAL)`); err != nil {
		b.Close()
		return nil, err
	}
	sub, err := b.Subscriber(prefix + "effects")
	if err != nil {
		b.Close()
		return nil, err
	}
	app := &App{Outbox: ob, Broker: b, DeadLetterTopic: prefix + "dead_letters", prefix: prefix}
	c, err := bus.NewConsumer(bus.ConsumerConfig{
		Registry: gen.Registry(), Subscriber: sub, Group: prefix + "effects", Routing: routing,
		DeadLetter: b.Publisher(), DeadLetterTopic: app.DeadLetterTopic, DeadLetterStore: cfg.DeadLetterStore,
		Pool: cfg.Pool, Outbox: ob, Logger: cfg.Logger,
		MaxRetries: 2, BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	c.OnAnyTx(func(ctx context.Context, tx pgx.Tx, ev bus.Event) ([]bus.Event, error) {
		if cfg.Fail != nil {
			if err := cfg.Fail(ev); err != nil {
				return nil, err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO effects (event_id, name, aggregate_id) VALUES ($1, $2, $3)
			ON CONFLICT (event_id) DO UPDATE SET applied = effects.applied + 1`,
			ev.Envelope().ID, ev.EventName(), ev.Envelope().AggregateID)
		return nil, err
	})
	app.Consumer = c
	app.Topics = c.Topics()
	relayCfg := bus.RelayConfig{Pool: cfg.Pool, Publisher: b.Publisher(), Logger: cfg.Logger}
	if !cfg.DefaultRelay {
		relayCfg.PollInterval, relayCfg.BackoffInitial, relayCfg.BackoffMax = 200*time.Millisecond, 10*time.Millisecond, 200*time.Millisecond
	}
	relay, err := bus.NewRelay(relayCfg)
	if err != nil {
		b.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return c.Run(gctx) })
	select {
	case <-c.Running():
	case <-gctx.Done():
		cancel()
		b.Close()
		return nil, fmt.Errorf("consumer did not start: %w", g.Wait())
	case <-time.After(30 * time.Second):
		cancel()
		b.Close()
		return nil, errors.New("consumer did not start within 30s")
	}
	g.Go(func() error { return relay.Run(gctx) })
	app.done = gctx.Done()
	var once sync.Once
	var stopErr error
	app.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = errors.Join(g.Wait(), b.Close())
		})
		return stopErr
	}
	app.err = app.stop
	return app, nil
}

// Stop stops the relay and the consumer and closes the broker.
func (a *App) Stop() error { return a.stop() }

// newDB returns a migrated database for one test.
func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(context.Background(), pool, schema.Options{Lanes: 4}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

func startApp(t *testing.T, url string, pool *pgxpool.Pool) *App {
	t.Helper()
	return startAppWith(t, AppConfig{BrokerURL: url, Pool: pool})
}

func startAppWith(t *testing.T, cfg AppConfig) *App {
	t.Helper()
	url := cfg.BrokerURL
	cfg.Prefix = "t" + uuid.NewString()[:8]
	app, err := StartApp(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start app on %s: %v", broker.Redact(url), err)
	}
	t.Cleanup(func() {
		if err := app.Stop(); err != nil {
			t.Errorf("stop app: %v", err)
		}
	})
	return app
}

// edupulseScenario returns every EduPulse event for a few aggregates, in
// per-aggregate order.
func edupulseScenario(aggregates, answersPer int) []bus.Event {
	var evs []bus.Event
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range aggregates {
		pulse, author := uuid.New(), uuid.New()
		evs = append(evs, gen.NewPulseCreated(pulse, author, fmt.Sprintf("pulse %d", i), now))
		for range answersPer {
			evs = append(evs, gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), now))
		}
		evs = append(evs, gen.NewLessonPublished(uuid.New(), author, fmt.Sprintf("lesson %d", i), now))
		evs = append(evs, gen.NewBadgeAwarded(uuid.New(), author, "first pulse", now))
	}
	return evs
}

type effect struct {
	ID          uuid.UUID
	Name        string
	AggregateID string
	Applied     int
}

// waitEffects waits until n events are applied, then returns them in the
// order they were applied.
func waitEffects(t *testing.T, app *App, pool *pgxpool.Pool, n int, timeout time.Duration) []effect {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		var count int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM effects").Scan(&count); err != nil {
			t.Fatalf("count effects: %v", err)
		}
		if count >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events applied after %s", count, n, timeout)
		}
		select {
		case <-app.done:
			t.Fatalf("the application stopped with %d of %d events applied: %v", count, n, app.err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	rows, err := pool.Query(ctx, "SELECT event_id, name, aggregate_id, applied FROM effects ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	effs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[effect])
	if err != nil {
		t.Fatal(err)
	}
	return effs
}

func publish(t *testing.T, app *App, pool *pgxpool.Pool, evs []bus.Event) {
	t.Helper()
	for i := 0; i < len(evs); i += 7 { // several transactions of several events
		batch := evs[i:min(i+7, len(evs))]
		if err := app.Outbox.InTx(context.Background(), pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return batch, nil }); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

func testAllEvents(t *testing.T, f Features, url string) {
	pool := newDB(t)
	app := startApp(t, url, pool)
	evs := edupulseScenario(8, 5)
	publish(t, app, pool, evs)
	effs := waitEffects(t, app, pool, len(evs), f.Timeout)

	want := map[uuid.UUID]bus.Event{}
	for _, ev := range evs {
		want[ev.Envelope().ID] = ev
	}
	kinds := map[string]int{}
	for _, e := range effs {
		ev, ok := want[e.ID]
		if !ok {
			t.Fatalf("applied unknown event %s", e.ID)
		}
		if e.Applied != 1 {
			t.Errorf("event %s applied %d times, want once", e.ID, e.Applied)
		}
		if e.Name != ev.EventName() || e.AggregateID != ev.Envelope().AggregateID {
			t.Errorf("event %s applied as %s/%s, want %s/%s", e.ID, e.Name, e.AggregateID, ev.EventName(), ev.Envelope().AggregateID)
		}
		kinds[e.Name]++
	}
	if names := gen.Registry().Names(); len(effs) != len(evs) || len(kinds) != len(names) {
		t.Fatalf("applied %d events of %d names, want %d of %d", len(effs), len(kinds), len(evs), len(names))
	}
	if f.OrderPerAggregate {
		pos := map[uuid.UUID]int{}
		for i, ev := range evs {
			pos[ev.Envelope().ID] = i
		}
		last := map[string]int{}
		for _, e := range effs {
			if p, ok := last[e.AggregateID]; ok && pos[e.ID] < p {
				t.Fatalf("aggregate %s: event %s (#%d) applied after #%d", e.AggregateID, e.ID, pos[e.ID], p)
			}
			last[e.AggregateID] = pos[e.ID]
		}
	}
}

func testDuplicates(t *testing.T, f Features, url string) {
	pool := newDB(t)
	app := startApp(t, url, pool)
	evs := edupulseScenario(2, 2)
	publish(t, app, pool, evs)
	waitEffects(t, app, pool, len(evs), f.Timeout)

	// Redeliver every event, as a relay restarted mid-batch would.
	for _, ev := range evs {
		msg, err := gen.Registry().NewMessage(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := app.Broker.Publisher().Publish(app.Topic(ev), msg); err != nil {
			t.Fatalf("redeliver: %v", err)
		}
	}
	deadline := time.Now().Add(f.Timeout)
	for app.Consumer.Stats().Duplicates < int64(len(evs)) {
		if time.Now().After(deadline) {
			t.Fatalf("duplicates skipped = %d, want %d", app.Consumer.Stats().Duplicates, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, e := range waitEffects(t, app, pool, len(evs), f.Timeout) {
		if e.Applied != 1 {
			t.Fatalf("event %s applied %d times despite the inbox", e.ID, e.Applied)
		}
	}
}

func testPoison(t *testing.T, f Features, url string) {
	pool := newDB(t)
	// Dead letters to the broker topic (the default with a Pool keeps them
	// in PostgreSQL: see testConsumerDeadLettersStored).
	app := startAppWith(t, AppConfig{BrokerURL: url, Pool: pool, DeadLetterStore: bus.DeadLetterStoreBroker})

	dlqSub, err := app.Broker.Subscriber(app.DeadLetterTopic + "_watcher")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadCh, err := dlqSub.Subscribe(ctx, app.DeadLetterTopic)
	if err != nil {
		t.Fatalf("subscribe to dead letters: %v", err)
	}
	// Ack dead letters as they come: an in-process broker may block the
	// consumer's dead-letter publish until they are acked.
	dead := make(chan *message.Message, 16)
	go func() {
		for m := range deadCh {
			m.Ack()
			dead <- m
		}
	}()

	// A message of an unknown type and one with a malformed payload, on the
	// consumer's topics, then good events.
	unknown := message.NewMessage(uuid.NewString(), []byte(`{}`))
	unknown.Metadata.Set(bus.MetadataName, "edupulse.pulse.exploded")
	unknown.Metadata.Set(bus.MetadataVersion, "1")
	unknown.Metadata.Set(bus.MetadataAggregateID, uuid.NewString())
	malformed := message.NewMessage(uuid.NewString(), []byte(`{"pulse_id": 42}`)) // valid JSON (brokers may insist), no UUID
	malformed.Metadata.Set(bus.MetadataName, "edupulse.pulse.created")
	malformed.Metadata.Set(bus.MetadataVersion, "1")
	malformed.Metadata.Set(bus.MetadataAggregateID, uuid.NewString())
	pulseTopic := app.Topic(gen.PulseCreated{})
	if err := app.Broker.Publisher().Publish(pulseTopic, unknown); err != nil {
		t.Fatal(err)
	}
	if err := app.Broker.Publisher().Publish(pulseTopic, malformed); err != nil {
		t.Fatal(err)
	}
	evs := edupulseScenario(2, 2)
	publish(t, app, pool, evs)
	waitEffects(t, app, pool, len(evs), f.Timeout)

	got := map[string]string{}
	timeout := time.After(f.Timeout)
	for len(got) < 2 {
		select {
		case m := <-dead:
			got[m.UUID] = m.Metadata.Get(bus.MetadataDeadLetterReason)
		case <-timeout:
			t.Fatalf("dead letters received: %v, want the unknown and the malformed message", got)
		}
	}
	for id, wantErr := range map[string]error{unknown.UUID: bus.ErrUnknownEvent, malformed.UUID: bus.ErrMalformedPayload} {
		reason, ok := got[id]
		if !ok {
			t.Fatalf("message %s not dead-lettered; got %v", id, got)
		}
		if reason == "" || !strings.Contains(reason, wantErr.Error()) {
			t.Errorf("dead letter %s reason %q, want it to say %q", id, reason, wantErr)
		}
	}
	// The consumer counts a dead letter after the publish that delivered
	// it to the subscriber above returned: wait for the count.
	countDeadline := time.Now().Add(f.Timeout)
	for app.Consumer.Stats().DeadLettered < 2 && time.Now().Before(countDeadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := app.Consumer.Stats().DeadLettered; n != 2 {
		t.Errorf("consumer counted %d dead letters, want 2", n)
	}
}

// testRefused publishes an event the broker refuses for good, then an event
// of the same aggregate (so of the same lane), through the outbox, with the
// relay's default configuration: the first must be dead-lettered with the
// broker's error, and the second delivered.
func testRefused(t *testing.T, f Features, url string) {
	pool := newDB(t)
	app := startAppWith(t, AppConfig{BrokerURL: url, Pool: pool, DefaultRelay: true})
	ctx := context.Background()
	pulse, author := uuid.New(), uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	refused := gen.NewPulseCreated(pulse, author, f.Refusal.Title, now)
	after := gen.NewPulseAnswered(pulse, uuid.New(), uuid.New(), now)
	begin := time.Now()
	for _, ev := range []bus.Event{refused, after} { // two transactions, in this order
		if err := app.Outbox.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	// Wait for both: the later event applied, the refused one
	// dead-lettered.
	dead := bus.NewDeadLetters(pool)
	deadline := time.Now().Add(f.Timeout)
	var dls []bus.DeadLetter
	var applied int
	for {
		var err error
		if dls, err = dead.List(ctx, bus.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM effects").Scan(&applied); err != nil {
			t.Fatal(err)
		}
		if len(dls) > 0 && applied > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d dead letter(s), %d event(s) applied; want the refused event dead-lettered and the next one applied", f.Timeout, len(dls), applied)
		}
		select {
		case <-app.done:
			t.Fatalf("the application stopped: %v", app.err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("refused event dead-lettered and the next one applied %v after publishing", time.Since(begin).Round(time.Millisecond))
	effs := waitEffects(t, app, pool, 1, f.Timeout)
	if len(effs) != 1 || effs[0].ID != after.Envelope().ID {
		t.Fatalf("applied %+v, want only the event after the refused one (%s)", effs, after.Envelope().ID)
	}
	if len(dls) != 1 || dls[0].MessageUUID != refused.Envelope().ID.String() {
		t.Fatalf("dead letters %+v, want the refused event %s", dls, refused.Envelope().ID)
	}
	dl := dls[0]
	t.Logf("dead letter after %d attempts, %v after the first failure: %s", dl.Attempts, dl.DeadAt.Sub(dl.FirstFailedAt).Round(time.Millisecond), dl.Error)
	if !strings.Contains(dl.Error, f.Refusal.Error) {
		t.Errorf("dead letter error %q, want it to contain the broker's %q", dl.Error, f.Refusal.Error)
	}
	if dl.EventName != refused.EventName() || dl.AggregateID != pulse.String() {
		t.Errorf("dead letter of %s/%s, want %s/%s", dl.EventName, dl.AggregateID, refused.EventName(), pulse)
	}
}
