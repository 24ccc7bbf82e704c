package bus_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// effectsDB migrates pool's database and adds the table the tests' OnTx
// handlers write their effects to: one row per application, so that an
// event applied twice shows.
func effectsDB(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 1}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE effects (event_id uuid NOT NULL)"); err != nil {
		t.Fatal(err)
	}
}

func applyEffect(ctx context.Context, tx pgx.Tx, ev bus.Event) error {
	_, err := tx.Exec(ctx, "INSERT INTO effects (event_id) VALUES ($1)", ev.Envelope().ID)
	return err
}

// effectCounts returns how many times each event was applied.
func effectCounts(t *testing.T, pool *pgxpool.Pool) map[uuid.UUID]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT event_id, count(*) FROM effects GROUP BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]int{}
	for rows.Next() {
		var id uuid.UUID
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		got[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// waitLong is waitFor with a longer deadline, for conditions that follow the
// end of an outage (the consumer's backoff reaches BackoffMax, 5 s by
// default, plus jitter).
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noDeadLetterFor fails the test for every dead letter that arrives within d.
func noDeadLetterFor(t *testing.T, deadCh <-chan *message.Message, d time.Duration) {
	t.Helper()
	end := time.After(d)
	for {
		select {
		case m := <-deadCh:
			t.Errorf("dead letter during the outage: %s (%s)", m.UUID, m.Metadata.Get(bus.MetadataDeadLetterReason))
		case <-end:
			return
		}
	}
}

// Issue 10.7: PostgreSQL stopped for 30 s under a running OnTx consumer
// with the default configuration: the consumer waits the outage out. No
// event is dead-lettered, and every event's effect is applied exactly
// once, the one whose transaction was open when the server stopped
// included.
func TestConsumerWaitsOutDatabaseOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, pool := pgtest.NewIsolatedServer(t)
	effectsDB(t, pool)
	gc := newGoChannel(t)
	dead, deadCh := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "outage",
		DeadLetter: dead, Pool: pool, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	down := make(chan struct{}) // closed once the server is down
	var downOnce sync.Once
	serverDown := func() { downOnce.Do(func() { close(down) }) }
	defer serverDown()
	inFlight := make(chan struct{}, 1)
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		if e.Title == "in flight" {
			select {
			case inFlight <- struct{}{}:
			default:
			}
			<-down // the server stops while this transaction is open
		}
		return nil, applyEffect(ctx, tx, e)
	}); err != nil {
		t.Fatal(err)
	}
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseAnswered) ([]bus.Event, error) {
		return nil, applyEffect(ctx, tx, e)
	}); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)

	var mu sync.Mutex
	var published []uuid.UUID
	publish := func(ev bus.Event) {
		msg, err := gen.Registry().NewMessage(ctx, ev)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		published = append(published, ev.Envelope().ID)
		mu.Unlock()
		_ = gc.Publish(ev.EventName(), msg) // returns once the consumer acked
	}
	// Two producers publish all along, before, during and after the outage,
	// on two topics (each blocks while its topic's message is not acked).
	stopProducing := make(chan struct{})
	var producers sync.WaitGroup
	for _, mk := range []func() bus.Event{
		func() bus.Event { return pulseCreated(uuid.New(), "steady") },
		func() bus.Event { return pulseAnswered(uuid.New()) },
	} {
		producers.Add(1)
		go func() {
			defer producers.Done()
			for {
				select {
				case <-stopProducing:
					return
				case <-time.After(20 * time.Millisecond):
				}
				publish(mk())
			}
		}()
	}
	waitFor(t, "events applied before the outage", func() bool { return c.Stats().Handled >= 20 })
	go publish(pulseCreated(uuid.New(), "in flight"))
	select {
	case <-inFlight:
	case <-time.After(15 * time.Second):
		t.Fatal("the in-flight event's handler did not start")
	}

	if err := srv.Shutdown(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	serverDown()
	failedBefore := c.Stats().Failed
	noDeadLetterFor(t, deadCh, 30*time.Second)
	st := c.Stats()
	t.Logf("during the 30 s outage: %d failed attempts; stats %+v", st.Failed-failedBefore, st)
	if st.Failed == failedBefore {
		t.Error("no attempt failed during the outage: the test did not test it")
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	resumed := time.Now()
	handledAtResume := c.Stats().Handled
	waitLong(t, "events applied after the outage", func() bool { return c.Stats().Handled >= handledAtResume+20 })
	t.Logf("consumer resumed %v after PostgreSQL", time.Since(resumed).Round(time.Millisecond))
	close(stopProducing)
	producersDone := make(chan struct{})
	go func() { producers.Wait(); close(producersDone) }()
	select {
	case <-producersDone:
	case <-time.After(60 * time.Second):
		t.Fatal("producers still blocked 60 s after the outage")
	}

	mu.Lock()
	want := append([]uuid.UUID(nil), published...)
	mu.Unlock()
	var counts map[uuid.UUID]int
	waitLong(t, "every published event applied", func() bool {
		counts = effectCounts(t, pool)
		return len(counts) >= len(want)
	})
	for _, id := range want {
		if counts[id] != 1 {
			t.Errorf("event %s applied %d times, want 1", id, counts[id])
		}
	}
	if len(counts) != len(want) {
		t.Errorf("%d events applied, %d published", len(counts), len(want))
	}
	if st := c.Stats(); st.DeadLettered != 0 {
		t.Errorf("stats %+v: dead letters during a database outage", st)
	}
	t.Logf("%d events, each applied once; stats %+v", len(want), c.Stats())
}

// Issue 10.7: the connection drops while the server answers COMMIT (the
// handler's effects and the inbox row are committed, the consumer cannot
// know), and the database then stays unreachable for longer than the retry
// budget of a failing handler (about 13 s with the defaults). The consumer
// does not dead-letter the event: once the database is back, the inbox row
// tells that the commit went through, and the event is acked, applied once.
func TestConsumerCommitOutcomeUnknownSettledByInbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	effectsDB(t, pool)
	proxy, proxied := newPgProxy(t, pool, 4)
	gc := newGoChannel(t)
	dead, deadCh := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "commit",
		DeadLetter: dead, Pool: proxied, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		return nil, applyEffect(ctx, tx, e)
	}); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)

	proxy.DropNextCommitAnswer(true)
	ev := pulseCreated(uuid.New(), "commit answer lost")
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gc.Publish(ev.EventName(), msg) }()
	select {
	case <-proxy.Dropped():
	case <-time.After(15 * time.Second):
		t.Fatal("no COMMIT went through the proxy")
	}
	if n := effectCounts(t, pool)[ev.Envelope().ID]; n != 1 {
		t.Fatalf("effect applied %d times by the COMMIT whose answer was lost, want 1", n)
	}
	noDeadLetterFor(t, deadCh, 20*time.Second)
	proxy.Restore()
	waitLong(t, "the event acked", func() bool { return c.Stats().Handled == 1 })
	if n := effectCounts(t, pool)[ev.Envelope().ID]; n != 1 {
		t.Errorf("effect applied %d times, want 1", n)
	}
	if st := c.Stats(); st.DeadLettered != 0 || st.Duplicates != 1 {
		t.Errorf("stats %+v: want no dead letter, and the inbox recognising the committed event once", st)
	}
}

// chanSubscriber hands the consumer the messages a test delivers, so that
// the test sees whether each is acked or nacked.
type chanSubscriber struct {
	mu     sync.Mutex
	closed bool
	topics map[string]chan *message.Message
}

func newChanSubscriber() *chanSubscriber {
	return &chanSubscriber{topics: map[string]chan *message.Message{}}
}

func (s *chanSubscriber) topic(name string) chan *message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.topics[name]
	if !ok {
		ch = make(chan *message.Message, 16)
		s.topics[name] = ch
	}
	return ch
}

func (s *chanSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ch := s.topic(topic)
	go func() {
		<-ctx.Done()
		_ = s.Close()
	}()
	return ch, nil
}

// deliver sends msg on topic with a context that ends when the consumer
// stops (as the brokers' subscribers do), and returns msg.
func (s *chanSubscriber) deliver(ctx context.Context, topic string, msg *message.Message) *message.Message {
	msg.SetContext(ctx)
	s.topic(topic) <- msg
	return msg
}

func (s *chanSubscriber) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		for _, ch := range s.topics {
			close(ch)
		}
	}
	return nil
}

// ackState waits up to d for msg to be acked or nacked and says which.
func ackState(msg *message.Message, d time.Duration) string {
	select {
	case <-msg.Acked():
		return "acked"
	case <-msg.Nacked():
		return "nacked"
	case <-time.After(d):
		return "neither acked nor nacked"
	}
}

// Issue 10.7: while the database is unreachable, failed attempts do not
// count against MaxRetries, and a consumer stopped during the outage
// returns promptly and nacks the message (it is redelivered later), never
// dead-letters it.
func TestConsumerStopDuringDatabaseOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	effectsDB(t, pool)
	proxy, proxied := newPgProxy(t, pool, 4)
	sub := newChanSubscriber()
	dead, deadCh := deadLetters(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: sub, Group: "stop",
		DeadLetter: dead, Pool: proxied, Logger: testLogger(),
		BackoffInitial: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int64
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		ran.Add(1)
		return nil, applyEffect(ctx, tx, e)
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	select {
	case <-c.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("consumer did not start")
	}

	proxy.Cut()
	ev := pulseCreated(uuid.New(), "during the outage")
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	msgCtx, cancelMsg := context.WithCancel(runCtx)
	defer cancelMsg()
	sub.deliver(msgCtx, ev.EventName(), msg)
	// Three times the attempts a failing handler gets (1 + MaxRetries).
	waitFor(t, "attempts during the outage", func() bool { return c.Stats().Failed >= 3*(1+bus.ConsumerMaxRetriesDefault) })
	if st := c.Stats(); st.DeadLettered != 0 {
		t.Fatalf("stats %+v: dead-lettered during the outage", st)
	}
	stopped := time.Now()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of the stop")
	}
	t.Logf("Run returned %v after the stop", time.Since(stopped).Round(time.Millisecond))
	if got := ackState(msg, 5*time.Second); got != "nacked" {
		t.Errorf("message %s when the consumer stopped during the outage, want nacked", got)
	}
	select {
	case m := <-deadCh:
		t.Errorf("dead letter: %s", m.Metadata.Get(bus.MetadataDeadLetterReason))
	default:
	}
	if st := c.Stats(); st.DeadLettered != 0 || st.Handled != 0 || ran.Load() != 0 {
		t.Errorf("stats %+v, handler ran %d times: want nothing handled or dead-lettered", st, ran.Load())
	}
}

// Issue 10.7: a database that stops answering (a hung server, a network
// that drops packets) makes attempts time out rather than fail. The
// consumer pings the inbox database after such a failure, takes the
// silence for an outage, and waits it out: no dead letter, applied once.
func TestConsumerWaitsOutUnresponsiveDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	effectsDB(t, pool)
	proxy, proxied := newPgProxy(t, pool, 4)
	gc := newGoChannel(t)
	dead, deadCh := deadLetters(t)
	logs := &lockedBuffer{}
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: gc, Group: "hung",
		DeadLetter: dead, Pool: proxied, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		HandlerTimeout: 200 * time.Millisecond, BackoffInitial: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		return nil, applyEffect(ctx, tx, e)
	}); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, c)
	publish := func(title string) bus.Event {
		ev := pulseCreated(uuid.New(), title)
		msg, err := gen.Registry().NewMessage(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = gc.Publish(ev.EventName(), msg) }()
		return ev
	}
	// A first event leaves a connection in the pool, so that the next
	// attempt starts on it and times out in a query, not in a dial.
	first := publish("before")
	waitFor(t, "the first event", func() bool { return c.Stats().Handled == 1 })
	proxy.Stall()
	second := publish("while the server hangs")
	// Twice the attempts a failing handler gets (1 + MaxRetries).
	waitFor(t, "attempts while the server hangs", func() bool { return c.Stats().Failed >= 2*(1+bus.ConsumerMaxRetriesDefault) })
	select {
	case m := <-deadCh:
		t.Fatalf("dead letter while the server hangs: %s", m.Metadata.Get(bus.MetadataDeadLetterReason))
	default:
	}
	proxy.Unstall()
	waitLong(t, "the second event", func() bool { return c.Stats().Handled == 2 })
	counts := effectCounts(t, pool)
	for _, ev := range []bus.Event{first, second} {
		if counts[ev.Envelope().ID] != 1 {
			t.Errorf("event %s applied %d times, want 1", ev.Envelope().ID, counts[ev.Envelope().ID])
		}
	}
	if st := c.Stats(); st.DeadLettered != 0 || st.OutageRetries == 0 {
		t.Errorf("stats %+v: want outage retries and no dead letter", st)
	}
	if !strings.Contains(logs.String(), "does not answer") {
		t.Errorf("no attempt was taken for an outage by the ping; log:\n%s", logs.String())
	}
}
