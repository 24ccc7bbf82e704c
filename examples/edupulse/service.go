package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// appSchema holds the EduPulse business tables. The service writes them and
// the events they cause in one transaction.
const appSchema = `
CREATE TABLE IF NOT EXISTS pulses (
    id UUID PRIMARY KEY, author_id UUID NOT NULL, title TEXT NOT NULL, published_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS lessons (
    id UUID PRIMARY KEY, author_id UUID NOT NULL, title TEXT NOT NULL, published_at TIMESTAMPTZ NOT NULL);
-- correct defaults to true: answers recorded before grading all counted.
CREATE TABLE IF NOT EXISTS answers (
    id UUID PRIMARY KEY, pulse_id UUID NOT NULL REFERENCES pulses, student_id UUID NOT NULL, answered_at TIMESTAMPTZ NOT NULL,
    correct BOOLEAN NOT NULL DEFAULT true);
-- Written by the badges consumer, in its inbox transaction.
CREATE TABLE IF NOT EXISTS student_progress (
    student_id UUID PRIMARY KEY, answers INTEGER NOT NULL, correct INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS badges (
    id UUID PRIMARY KEY, student_id UUID NOT NULL, reason TEXT NOT NULL, awarded_at TIMESTAMPTZ NOT NULL);
`

// service is the EduPulse write side: every method is one transaction that
// writes business rows and publishes the events they cause.
type service struct {
	pool   *pgxpool.Pool
	outbox *bus.Outbox
	// committed is called with each event after its transaction committed.
	committed func(ev bus.Event, at time.Time)
	// scope, if set, is called with the id of each aggregate the service
	// creates, before the transaction that creates it.
	scope func(aggregateID uuid.UUID)
}

func (s *service) inScope(id uuid.UUID) {
	if s.scope != nil {
		s.scope(id)
	}
}

func (s *service) inTx(ctx context.Context, fn func(tx pgx.Tx) ([]bus.Event, error)) error {
	var evs []bus.Event
	err := s.outbox.InTx(ctx, s.pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
		var err error
		evs, err = fn(tx)
		return evs, err
	})
	if err != nil {
		return err
	}
	now := time.Now()
	for _, ev := range evs {
		s.committed(ev, now)
	}
	return nil
}

// CreatePulse publishes a new learning pulse.
func (s *service) CreatePulse(ctx context.Context, author uuid.UUID, title string) (uuid.UUID, error) {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC()
	s.inScope(id)
	err := s.inTx(ctx, func(tx pgx.Tx) ([]bus.Event, error) {
		if _, err := tx.Exec(ctx, "INSERT INTO pulses (id, author_id, title, published_at) VALUES ($1, $2, $3, $4)", id, author, title, now); err != nil {
			return nil, fmt.Errorf("insert pulse: %w", err)
		}
		return []bus.Event{gen.NewPulseCreated(id, author, title, now)}, nil
	})
	return id, err
}

// PublishLesson publishes a lesson.
func (s *service) PublishLesson(ctx context.Context, author uuid.UUID, title string) error {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC()
	s.inScope(id)
	return s.inTx(ctx, func(tx pgx.Tx) ([]bus.Event, error) {
		if _, err := tx.Exec(ctx, "INSERT INTO lessons (id, author_id, title, published_at) VALUES ($1, $2, $3, $4)", id, author, title, now); err != nil {
			return nil, fmt.Errorf("insert lesson: %w", err)
		}
		return []bus.Event{gen.NewLessonPublished(id, author, title, now)}, nil
	})
}

// AnswerPulse records a student's graded answer to a pulse and publishes
// PulseAnswered version 2.
func (s *service) AnswerPulse(ctx context.Context, pulse, student uuid.UUID, correct bool) error {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC()
	return s.inTx(ctx, func(tx pgx.Tx) ([]bus.Event, error) {
		if _, err := tx.Exec(ctx, "INSERT INTO answers (id, pulse_id, student_id, answered_at, correct) VALUES ($1, $2, $3, $4, $5)",
			id, pulse, student, now, correct); err != nil {
			return nil, fmt.Errorf("insert answer: %w", err)
		}
		return []bus.Event{gen.NewPulseAnsweredV2(pulse, id, student, correct, now)}, nil
	})
}

// AnswerPulseV1 is AnswerPulse as a producer not yet upgraded runs it
// during a rolling deploy: it does not grade the answer (the row takes the
// column's default, correct) and publishes PulseAnswered version 1, which
// the consumers receive converted into version 2 by
// events.UpcastPulseAnswered.
func (s *service) AnswerPulseV1(ctx context.Context, pulse, student uuid.UUID) error {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC()
	return s.inTx(ctx, func(tx pgx.Tx) ([]bus.Event, error) {
		if _, err := tx.Exec(ctx, "INSERT INTO answers (id, pulse_id, student_id, answered_at) VALUES ($1, $2, $3, $4)", id, pulse, student, now); err != nil {
			return nil, fmt.Errorf("insert answer: %w", err)
		}
		return []bus.Event{gen.NewPulseAnswered(pulse, id, student, now)}, nil
	})
}
