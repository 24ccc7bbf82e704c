package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// awardBadges is the badges consumer's inbox handler: it counts a
// student's answers, and the correct ones, and awards a badge every
// badgeEvery answers, publishing BadgeAwarded through the outbox in the same
// transaction (a chained event). The inbox makes a redelivered PulseAnswered
// count once. It takes the latest version only: version 1 events reach it
// converted by events.UpcastPulseAnswered.
func awardBadges(badgeEvery int) func(ctx context.Context, tx pgx.Tx, ev gen.PulseAnsweredV2) ([]bus.Event, error) {
	return func(ctx context.Context, tx pgx.Tx, ev gen.PulseAnsweredV2) ([]bus.Event, error) {
		correct := 0
		if ev.Correct {
			correct = 1
		}
		var answers int
		err := tx.QueryRow(ctx, `INSERT INTO student_progress (student_id, answers, correct) VALUES ($1, 1, $2)
			ON CONFLICT (student_id) DO UPDATE SET answers = student_progress.answers + 1,
				correct = student_progress.correct + excluded.correct
			RETURNING answers`, ev.StudentID, correct).Scan(&answers)
		if err != nil {
			return nil, fmt.Errorf("count answers: %w", err)
		}
		if answers%badgeEvery != 0 {
			return nil, nil
		}
		badge := uuid.Must(uuid.NewV7())
		reason := fmt.Sprintf("%d answers", answers)
		now := time.Now().UTC()
		if _, err := tx.Exec(ctx, "INSERT INTO badges (id, student_id, reason, awarded_at) VALUES ($1, $2, $3, $4)",
			badge, ev.StudentID, reason, now); err != nil {
			return nil, fmt.Errorf("insert badge: %w", err)
		}
		return []bus.Event{gen.NewBadgeAwarded(badge, ev.StudentID, reason, now)}, nil
	}
}

// notifier is the notifications consumer. It implements gen.Handler
// directly, so declaring a new event type fails to compile until it is
// handled here. gen.Handler takes each event at its latest version:
// gen.Dispatch converts PulseAnswered version 1 into version 2. (run
// counts the events it handled, as published.)
type notifier struct {
	logger *slog.Logger
}

var _ gen.Handler = (*notifier)(nil)

func (n *notifier) HandleBadgeAwarded(ctx context.Context, e gen.BadgeAwarded) error {
	n.logger.DebugContext(ctx, "notify: badge awarded", "user", e.UserID, "reason", e.Reason)
	return nil
}

func (n *notifier) HandleLessonPublished(ctx context.Context, e gen.LessonPublished) error {
	n.logger.DebugContext(ctx, "notify: new lesson", "title", e.Title)
	return nil
}

func (n *notifier) HandlePulseAnsweredV2(ctx context.Context, e gen.PulseAnsweredV2) error {
	n.logger.DebugContext(ctx, "notify: pulse answered", "pulse", e.PulseID, "student", e.StudentID, "correct", e.Correct)
	return nil
}

func (n *notifier) HandlePulseCreated(ctx context.Context, e gen.PulseCreated) error {
	n.logger.DebugContext(ctx, "notify: new pulse", "title", e.Title)
	return nil
}

// runStats counts what the example did, for the progress line and the
// summary. Its scope is this run's: the aggregates (pulses, lessons,
// students) it created, so that events of earlier runs on the same
// database, still relayed, are left out.
type runStats struct {
	mu          sync.Mutex
	published   map[string]int // by kind (wire name, @vN above version 1)
	committedAt map[uuid.UUID]time.Time
	aggregates  map[string]bool   // this run's aggregate ids
	students    []uuid.UUID       // this run's students
	seen        map[uuid.UUID]int // notifications: deliveries per event id, this run's events
	byKind      map[string]int    // notifications: distinct events per kind published, this run's
	latencies   []time.Duration   // commit to consume, first delivery
	relayed     int64
	foreign     int // notifications: events of earlier runs handled
}

func newRunStats() *runStats {
	return &runStats{published: map[string]int{}, committedAt: map[uuid.UUID]time.Time{},
		aggregates: map[string]bool{}, seen: map[uuid.UUID]int{}, byKind: map[string]int{}}
}

// addAggregate puts an aggregate in the run's scope. The service calls it
// before the transaction that creates the aggregate, so that its events
// count even if the commit's outcome never reaches the producer.
func (s *runStats) addAggregate(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aggregates[id.String()] = true
}

// addStudent puts a student in the run's scope, before its first answer.
func (s *runStats) addStudent(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aggregates[id.String()] = true
	s.students = append(s.students, id)
}

// scope returns the run's students and aggregate ids.
func (s *runStats) scope() (students []uuid.UUID, aggregates []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	aggregates = make([]string, 0, len(s.aggregates))
	for id := range s.aggregates {
		aggregates = append(aggregates, id)
	}
	return slices.Clone(s.students), aggregates
}

// kindName returns the kind of an event: its wire name, with "@vN" for
// versions above 1 (gen.Kind's String).
func kindName(ev bus.Event) string {
	if e, ok := ev.(gen.Event); ok {
		return e.Kind().String()
	}
	return ev.EventName()
}

func (s *runStats) committed(ev bus.Event, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.published[kindName(ev)]++
	s.committedAt[ev.Envelope().ID] = at
}

// consumed counts an event the notifications consumer handled, as it was
// published (PulseAnswered version 1 as version 1).
func (s *runStats) consumed(ev bus.Event) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.aggregates[ev.Envelope().AggregateID] {
		s.foreign++
		return
	}
	id := ev.Envelope().ID
	s.seen[id]++
	if s.seen[id] > 1 {
		return
	}
	s.byKind[kindName(ev)]++
	// Chained events (BadgeAwarded) commit inside the badges consumer; their
	// latency is measured from when they occurred.
	at, ok := s.committedAt[id]
	if !ok {
		at = ev.Envelope().OccurredAt
	}
	s.latencies = append(s.latencies, now.Sub(at))
}

func (s *runStats) addRelayed() {
	s.mu.Lock()
	s.relayed++
	s.mu.Unlock()
}

type snapshot struct {
	published, relayed, consumed, duplicates int
}

func (s *runStats) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var snap snapshot
	for _, n := range s.published {
		snap.published += n
	}
	snap.relayed = int(s.relayed)
	snap.consumed = len(s.seen)
	for _, n := range s.seen {
		snap.duplicates += n - 1
	}
	return snap
}
