package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/all" // -broker can name any adapter
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/internal/pgdsn"
	"github.com/edupulse/eventbus/internal/pgserver"
	"github.com/edupulse/eventbus/schema"
)

// run runs the scenario and returns an error if anything failed, the
// consistency check included; errInterrupted if an interrupt stopped it
// before the events committed drained.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	// The flags first, the broker URL's scheme included: a mistake fails
	// before PostgreSQL starts.
	if err := cfg.validate(); err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.Verbose)
	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		fmt.Fprintln(stderr, "edupulse: DATABASE_URL is unset: starting a throwaway PostgreSQL from the local binaries")
		srv, err := pgserver.Start(ctx, pgserver.Options{})
		if err != nil {
			return fmt.Errorf("start PostgreSQL: %w", err)
		}
		defer srv.Stop()
		if dbURL, err = srv.CreateDatabase(ctx, "edupulse"); err != nil {
			return err
		}
	}
	// Connect and ping before anything uses the pool: a server that is
	// down is reported as such, once, not as a failed migration.
	pool, err := pgdsn.Connect(ctx, dbURL, pgdsn.Options{})
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: cfg.Lanes}); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, appSchema); err != nil {
		return fmt.Errorf("create the EduPulse tables: %w", err)
	}

	b, err := broker.Open(ctx, cfg.BrokerURL, broker.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stderr, "edupulse: broker %s, %d lanes\n", broker.Redact(cfg.BrokerURL), cfg.Lanes)

	outbox, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		return err
	}
	stats := newRunStats()
	committed := stats.committed
	if cfg.lostCommit != nil {
		committed = func(ev bus.Event, at time.Time) {
			if !cfg.lostCommit(ev) {
				stats.committed(ev, at)
			}
		}
	}
	svc := &service{pool: pool, outbox: outbox, committed: committed, scope: stats.addAggregate}

	// The consumers take the outbox's routing (they are given the outbox),
	// so both sides agree on the topics. Badges reads only the topics of
	// PulseAnswered: version 2, which it handles, and version 1, which
	// reaches it converted (one topic under the default routing).
	var answeredTopics []string
	for _, ev := range []bus.Event{gen.PulseAnswered{}, gen.PulseAnsweredV2{}} {
		topic, err := outbox.Routing().Topic(gen.Registry(), ev)
		if err != nil {
			return err
		}
		if !slices.Contains(answeredTopics, topic) {
			answeredTopics = append(answeredTopics, topic)
		}
	}
	badges, err := newConsumer(b, pool, outbox, logger, "badges", answeredTopics)
	if err != nil {
		return err
	}
	if err := bus.OnTx(badges, awardBadges(cfg.BadgeEvery)); err != nil {
		return err
	}

	notifications, err := newConsumer(b, pool, outbox, logger, "notifications", nil)
	if err != nil {
		return err
	}
	note := &notifier{logger: logger}
	if err := notifications.OnAny(func(ctx context.Context, ev bus.Event) error {
		if cfg.onConsume != nil {
			if err := cfg.onConsume(ctx); err != nil {
				return err
			}
		}
		if err := gen.Dispatch(ctx, note, ev); err != nil {
			return err
		}
		// Counted as published: version 1 of PulseAnswered as version 1,
		// although the handler received it converted.
		stats.consumed(ev)
		return nil
	}); err != nil {
		return err
	}

	relayMiddlewares := []message.HandlerMiddleware{countRelayed(stats)}
	if cfg.MetricsAddr != "" {
		mw, stopMetrics, err := serveMetrics(ctx, cfg, stderr, pool, map[string]*bus.Consumer{"badges": badges, "notifications": notifications})
		if err != nil {
			return err
		}
		defer stopMetrics()
		relayMiddlewares = append(relayMiddlewares, mw)
	}
	relay, err := bus.NewRelay(bus.RelayConfig{
		Pool: pool, Publisher: b.Publisher(), Logger: logger,
		Middlewares: relayMiddlewares,
	})
	if err != nil {
		return err
	}

	// Consumers first (an in-process broker drops messages nobody
	// subscribed to), then the relay, then the producers.
	runCtx, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()
	g, gctx := errgroup.WithContext(runCtx)
	for _, c := range []*bus.Consumer{badges, notifications} {
		g.Go(func() error { return c.Run(gctx) })
		select {
		case <-c.Running():
		case <-gctx.Done():
			return g.Wait()
		}
	}
	g.Go(func() error { return relay.Run(gctx) })

	var progressDone chan struct{}
	if cfg.Progress {
		progressDone = make(chan struct{})
		go func() {
			defer close(progressDone)
			progress(gctx, stderr, pool, stats)
		}()
	}

	start := time.Now()
	produceErr := produce(ctx, cfg, svc, stats)
	if cfg.onDrain != nil {
		cfg.onDrain()
	}
	drained, state, drainErr := waitDrained(ctx, cfg, pool, stats, stderr)
	elapsed := time.Since(start)

	stopAll()
	runErr := g.Wait()
	if progressDone != nil {
		<-progressDone
		fmt.Fprintln(stderr)
	}
	interrupted := ctx.Err() != nil
	if err := errors.Join(produceErr, drainErr, runErr); err != nil {
		return err
	}
	if !drained {
		// Not a consistency failure: the check would count events still on
		// their way.
		if interrupted {
			return fmt.Errorf("%w: the events committed did not drain within -interrupt-drain %s (%s): consistency not checked; "+
				"they are in the outbox and the broker still (eventbus status shows the backlog)", errInterrupted, cfg.InterruptDrain, state)
		}
		return fmt.Errorf("the events did not drain within -drain-timeout %s (%s): consistency not checked", cfg.DrainTimeout, state)
	}

	rep, err := buildReport(context.WithoutCancel(ctx), pool, cfg, stats, badges, notifications, elapsed)
	if err != nil {
		return err
	}
	rep.interrupted = interrupted
	rep.print(stdout)
	if len(rep.problems) > 0 {
		return fmt.Errorf("consistency check failed: %d problem(s)", len(rep.problems))
	}
	if interrupted {
		fmt.Fprintln(stderr, "edupulse: stopped cleanly after the interrupt: every event committed before it was consumed, and checked")
	}
	return nil
}

func newConsumer(b broker.Broker, pool *pgxpool.Pool, outbox *bus.Outbox, logger *slog.Logger, group string, topics []string) (*bus.Consumer, error) {
	sub, err := b.Subscriber(group)
	if err != nil {
		return nil, err
	}
	return bus.NewConsumer(bus.ConsumerConfig{
		Registry: gen.Registry(), Subscriber: sub, Group: group, Topics: topics,
		DeadLetter: b.Publisher(), Pool: pool, Outbox: outbox, Logger: logger,
	})
}

// countRelayed is a relay middleware counting published events.
func countRelayed(stats *runStats) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil {
				stats.addRelayed()
			}
			return out, err
		}
	}
}

// produce runs the workload: pulses and lessons, then students answering
// random pulses, with cfg.Workers concurrent producers.
func produce(ctx context.Context, cfg config, svc *service, stats *runStats) error {
	instructors := make([]uuid.UUID, cfg.Instructors)
	for i := range instructors {
		instructors[i] = uuid.New()
	}
	pulses := make([]uuid.UUID, cfg.Pulses)
	for i := range pulses {
		id, err := svc.CreatePulse(ctx, instructors[i%len(instructors)], fmt.Sprintf("Pulse #%d", i+1))
		if ctx.Err() != nil {
			return nil // interrupted: stop producing, keep what committed
		}
		if err != nil {
			return fmt.Errorf("create pulse: %w", err)
		}
		pulses[i] = id
	}
	for i := range cfg.Lessons {
		err := svc.PublishLesson(ctx, instructors[i%len(instructors)], fmt.Sprintf("Lesson #%d", i+1))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("publish lesson: %w", err)
		}
	}
	deadline := time.Time{}
	if cfg.Duration > 0 {
		deadline = time.Now().Add(cfg.Duration)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Workers)
	for s := range cfg.Students {
		student := uuid.New()
		// In the run's scope before its first answer: its BadgeAwarded
		// events are this run's.
		stats.addStudent(student)
		rng := rand.New(rand.NewPCG(uint64(s), 42))
		g.Go(func() error {
			for n := 0; ; n++ {
				if deadline.IsZero() && n >= cfg.Answers || !deadline.IsZero() && time.Now().After(deadline) {
					return nil
				}
				if gctx.Err() != nil {
					return nil // interrupted: stop producing, keep what committed
				}
				pulse := pulses[rng.IntN(len(pulses))]
				var err error
				if cfg.V1Every > 0 && n%cfg.V1Every == cfg.V1Every-1 {
					err = svc.AnswerPulseV1(gctx, pulse, student)
				} else {
					err = svc.AnswerPulse(gctx, pulse, student, rng.IntN(4) != 0)
				}
				if err != nil {
					if gctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("answer pulse: %w", err)
				}
			}
		})
	}
	return g.Wait()
}

// drainState is how far the run's events got, read from the database:
// the relay's backlog, this run's answers against those the badges
// consumer counted, and this run's events in the outbox against those the
// notifications consumer handled.
type drainState struct {
	backlog            int64
	answers, counted   int
	inOutbox, consumed int
}

func (s drainState) drained() bool {
	return s.backlog == 0 && s.counted == s.answers && s.consumed == s.inOutbox
}

func (s drainState) String() string {
	return fmt.Sprintf("backlog %d, answers counted %d of %d, events consumed %d of %d", s.backlog, s.counted, s.answers, s.consumed, s.inOutbox)
}

// readDrainState reads the drain state of this run's events. It reads the
// database rather than what the producers counted: a commit whose outcome
// a producer could not learn (an interrupt during COMMIT) is counted too.
func readDrainState(ctx context.Context, pool *pgxpool.Pool, stats *runStats) (drainState, error) {
	var st drainState
	lanes, err := db.New().LaneStatus(ctx, pool, bus.ConsumerGroupDefault)
	if err != nil {
		return st, fmt.Errorf("read the backlog: %w", err)
	}
	for _, l := range lanes {
		st.backlog += l.Backlog
	}
	students, aggregates := stats.scope()
	if err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM answers WHERE student_id = ANY($1)),
			(SELECT coalesce(sum(answers), 0) FROM student_progress WHERE student_id = ANY($1)),
			(SELECT count(*) FROM eventbus_outbox WHERE metadata->>'aggregate_id' = ANY($2))`,
		students, aggregates).Scan(&st.answers, &st.counted, &st.inOutbox); err != nil {
		return st, fmt.Errorf("read the run's progress: %w", err)
	}
	st.consumed = stats.snapshot().consumed
	return st, nil
}

// waitDrained waits until the outbox is relayed and both consumers handled
// this run's events, chained badges included, for at most
// cfg.DrainTimeout; after an interrupt (ctx ending, before or while it
// waits), for at most cfg.InterruptDrain more. It reports whether they
// drained, and the last state read. Without the progress line it says how
// the drain goes every second once it takes long or was interrupted.
func waitDrained(ctx context.Context, cfg config, pool *pgxpool.Pool, stats *runStats, stderr io.Writer) (bool, string, error) {
	qctx := context.WithoutCancel(ctx)
	start := time.Now()
	deadline := start.Add(cfg.DrainTimeout)
	interrupt := ctx.Done()
	interrupted := false
	var lastNote time.Time
	for {
		st, err := readDrainState(qctx, pool, stats)
		if err != nil {
			return false, "", err
		}
		if st.drained() {
			return true, st.String(), nil
		}
		now := time.Now()
		if now.After(deadline) {
			return false, st.String(), nil
		}
		if !cfg.Progress && (interrupted || now.Sub(start) > 5*time.Second) && now.Sub(lastNote) >= time.Second {
			fmt.Fprintf(stderr, "edupulse: draining: %s (%s left)\n", st, deadline.Sub(now).Round(time.Second))
			lastNote = now
		}
		select {
		case <-interrupt:
			interrupt, interrupted = nil, true
			fmt.Fprintf(stderr, "\nedupulse: interrupted: producers stopped; draining what was committed for at most %s (-interrupt-drain; Ctrl-C again to quit now)\n",
				cfg.InterruptDrain)
			if d := time.Now().Add(cfg.InterruptDrain); d.Before(deadline) {
				deadline = d
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// progress prints one live line until ctx ends.
func progress(ctx context.Context, w io.Writer, pool *pgxpool.Pool, stats *runStats) {
	q := db.New()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true // print the final state once more
		case <-t.C:
		}
		var backlog int64
		if lanes, err := q.LaneStatus(context.WithoutCancel(ctx), pool, bus.ConsumerGroupDefault); err == nil {
			for _, l := range lanes {
				backlog += l.Backlog
			}
		}
		s := stats.snapshot()
		fmt.Fprintf(w, "\rpublished %6d  relayed %6d  consumed %6d  backlog %6d ", s.published, s.relayed, s.consumed, backlog)
	}
}
