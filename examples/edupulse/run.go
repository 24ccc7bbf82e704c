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
	"github.com/edupulse/eventbus/internal/pgserver"
	"github.com/edupulse/eventbus/schema"
)

// run runs the scenario and returns an error if anything failed, the
// consistency check included.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
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
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
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
	svc := &service{pool: pool, outbox: outbox, committed: stats.committed}

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
	note := &notifier{logger: logger, stats: stats}
	if err := notifications.OnAny(func(ctx context.Context, ev bus.Event) error { return gen.Dispatch(ctx, note, ev) }); err != nil {
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
	produceErr := produce(ctx, cfg, svc)
	drainCtx, drainTimeout := ctx, cfg.DrainTimeout
	if ctx.Err() != nil {
		// Interrupted: producers stopped; let what committed drain for a
		// moment (a second Ctrl-C ends the process at once).
		fmt.Fprintln(stderr, "\nedupulse: interrupted: draining what was committed (Ctrl-C again to quit now)")
		drainCtx, drainTimeout = context.WithoutCancel(ctx), min(cfg.DrainTimeout, 15*time.Second)
	}
	drainErr := waitDrained(drainCtx, drainTimeout, pool, stats, badges)
	elapsed := time.Since(start)

	stopAll()
	runErr := g.Wait()
	if progressDone != nil {
		<-progressDone
		fmt.Fprintln(stderr)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "edupulse: stopped cleanly after the interrupt")
	}

	rep, err := buildReport(context.WithoutCancel(ctx), pool, cfg, stats, badges, notifications, elapsed)
	if err != nil {
		return errors.Join(produceErr, drainErr, runErr, err)
	}
	rep.print(stdout)
	if err := errors.Join(produceErr, drainErr, runErr); err != nil {
		return err
	}
	if len(rep.problems) > 0 {
		return fmt.Errorf("consistency check failed: %d problem(s)", len(rep.problems))
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
func produce(ctx context.Context, cfg config, svc *service) error {
	instructors := make([]uuid.UUID, cfg.Instructors)
	for i := range instructors {
		instructors[i] = uuid.New()
	}
	pulses := make([]uuid.UUID, cfg.Pulses)
	for i := range pulses {
		id, err := svc.CreatePulse(ctx, instructors[i%len(instructors)], fmt.Sprintf("Pulse #%d", i+1))
		if err != nil {
			return fmt.Errorf("create pulse: %w", err)
		}
		pulses[i] = id
	}
	for i := range cfg.Lessons {
		if err := svc.PublishLesson(ctx, instructors[i%len(instructors)], fmt.Sprintf("Lesson #%d", i+1)); err != nil {
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

// waitDrained waits until the outbox is relayed and both consumers handled
// everything, chained badges included.
func waitDrained(ctx context.Context, timeout time.Duration, pool *pgxpool.Pool, stats *runStats, badges *bus.Consumer) error {
	deadline := time.Now().Add(timeout)
	q := db.New()
	for {
		lanes, err := q.LaneStatus(ctx, pool, bus.ConsumerGroupDefault)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("read backlog: %w", err)
		}
		var backlog int64
		for _, l := range lanes {
			backlog += l.Backlog
		}
		var badgeRows, answersSeen int
		_ = pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM badges), (SELECT coalesce(sum(answers), 0) FROM student_progress)").Scan(&badgeRows, &answersSeen)
		snap := stats.snapshot()
		stats.mu.Lock()
		wantAnswers := stats.published[gen.KindPulseAnswered.String()] + stats.published[gen.KindPulseAnsweredV2.String()]
		stats.mu.Unlock()
		if backlog == 0 && answersSeen == wantAnswers && snap.consumed == snap.published+badgeRows {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained after %s: backlog %d, answers counted %d of %d, consumed %d of %d",
				timeout, backlog, answersSeen, wantAnswers, snap.consumed, snap.published+badgeRows)
		}
		select {
		case <-ctx.Done():
			return nil
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
