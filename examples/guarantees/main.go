// Command guarantees walks through eventbus's delivery guarantees, one
// step at a time, on a throwaway PostgreSQL (unless DATABASE_URL is set)
// and an in-process broker:
//
//  1. A rolled-back transaction publishes nothing.
//  2. A committed one is relayed and consumed.
//  3. A redelivered event is skipped by the consumer's inbox.
//  4. A malformed outbox row is dead-lettered, and the events after it
//     still flow.
//
// Run it with:
//
//	go run ./examples/guarantees
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgserver"
	"github.com/edupulse/eventbus/schema"
)

func main() {
	if err := run(context.Background(), os.Getenv("DATABASE_URL"), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "guarantees:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dbURL string, out io.Writer) error {
	if dbURL == "" {
		srv, err := pgserver.Start(ctx, pgserver.Options{})
		if err != nil {
			return err
		}
		defer srv.Stop()
		if dbURL, err = srv.CreateDatabase(ctx, "guarantees"); err != nil {
			return err
		}
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 1}); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := broker.Open(ctx, "gochannel://", broker.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer b.Close()
	outbox, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: gen.Registry()})
	if err != nil {
		return err
	}

	// A consumer whose effect must happen once per event: an inbox handler.
	sub, err := b.Subscriber("counter")
	if err != nil {
		return err
	}
	consumer, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: sub, Group: "counter",
		DeadLetter: b.Publisher(), Pool: pool, Logger: logger})
	if err != nil {
		return err
	}
	var applied atomic.Int64
	err = bus.OnTx(consumer, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		// Print, then count: the main goroutine waits on the count before
		// it prints again, so the two never write at once.
		fmt.Fprintf(out, "  consumer: applied %q\n", e.Title)
		applied.Add(1)
		return nil, nil
	})
	if err != nil {
		return err
	}
	relay, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: b.Publisher(), Logger: logger, MaxAttempts: 2})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- consumer.Run(runCtx) }()
	<-consumer.Running()
	go func() { errc <- relay.Run(runCtx) }()

	wait := func(what string, cond func() bool) error {
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("timed out waiting until %s", what)
			}
		}
		return nil
	}

	fmt.Fprintln(out, "1. a rolled-back transaction publishes nothing")
	errRollback := errors.New("validation failed")
	err = outbox.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
		if err := outbox.Publish(ctx, tx, gen.NewPulseCreated(uuid.New(), uuid.New(), "never seen", time.Now().UTC())); err != nil {
			return nil, err
		}
		return nil, errRollback
	})
	fmt.Fprintf(out, "  InTx: %v; outbox rows: %d\n", err, count(ctx, pool, "SELECT count(*) FROM eventbus_outbox"))

	fmt.Fprintln(out, "2. a committed transaction is relayed and consumed")
	ev := gen.NewPulseCreated(uuid.New(), uuid.New(), "Intro to Topology", time.Now().UTC())
	if err := outbox.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
		return err
	}
	if err := wait("the event is consumed", func() bool { return applied.Load() == 1 }); err != nil {
		return err
	}

	fmt.Fprintln(out, "3. a redelivered event is skipped by the inbox")
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		return err
	}
	if err := b.Publisher().Publish(ev.EventName(), msg); err != nil { // as a relay restarted mid-batch would
		return err
	}
	if err := wait("the duplicate is skipped", func() bool { return consumer.Stats().Duplicates == 1 }); err != nil {
		return err
	}
	fmt.Fprintf(out, "  applied %d time(s), duplicates skipped: %d\n", applied.Load(), consumer.Stats().Duplicates)

	fmt.Fprintln(out, "4. a malformed outbox row is dead-lettered; later events still flow")
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, '{"not": "an envelope"}', '{}', pg_current_xact_id())`, uuid.NewString()); err != nil {
		return err
	}
	after := gen.NewPulseCreated(uuid.New(), uuid.New(), "After the poison", time.Now().UTC())
	if err := outbox.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{after}, nil }); err != nil {
		return err
	}
	dead := bus.NewDeadLetters(pool)
	if err := wait("the row is dead-lettered and the next event consumed", func() bool {
		n, _ := dead.Count(ctx)
		return n == 1 && applied.Load() == 2
	}); err != nil {
		return err
	}
	list, err := dead.List(ctx, bus.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  dead letter #%d after %d attempts: %s\n", list[0].ID, list[0].Attempts, list[0].Error)

	stop()
	for range 2 {
		if err := <-errc; err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "done")
	return nil
}

func count(ctx context.Context, pool *pgxpool.Pool, q string) int {
	var n int
	if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
		return -1
	}
	return n
}
