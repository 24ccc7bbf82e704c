package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// awardBadges is the badges consumer's inbox handler: it counts a
// student's answers and awards a badge every badgeEvery answers, publishing
// BadgeAwarded through the outbox in the same transaction (a chained event).
// The inbox makes a redelivered PulseAnswered count once.
func awardBadges(badgeEvery int) func(ctx context.Context, tx pgx.Tx, ev gen.PulseAnswered) ([]bus.Event, error) {
	return func(ctx context.Context, tx pgx.Tx, ev gen.PulseAnswered) ([]bus.Event, error) {
		var answers int
		err := tx.QueryRow(ctx, `INSERT INTO student_progress (student_id, answers) VALUES ($1, 1)
			ON CONFLICT (student_id) DO UPDATE SET answers = student_progress.answers + 1
			RETURNING answers`, ev.StudentID).Scan(&answers)
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
// handled here.
type notifier struct {
	logger *slog.Logger
	stats  *runStats
}

var _ gen.Handler = (*notifier)(nil)

func (n *notifier) HandleBadgeAwarded(ctx context.Context, e gen.BadgeAwarded) error {
	n.logger.DebugContext(ctx, "notify: badge awarded", "user", e.UserID, "reason", e.Reason)
	n.stats.consumed(e)
	return nil
}

func (n *notifier) HandleLessonPublished(ctx context.Context, e gen.LessonPublished) error {
	n.logger.DebugContext(ctx, "notify: new lesson", "title", e.Title)
	n.stats.consumed(e)
	return nil
}

func (n *notifier) HandlePulseAnswered(ctx context.Context, e gen.PulseAnswered) error {
	n.logger.DebugContext(ctx, "notify: pulse answered", "pulse", e.PulseID, "student", e.StudentID)
	n.stats.consumed(e)
	return nil
}

func (n *notifier) HandlePulseCreated(ctx context.Context, e gen.PulseCreated) error {
	n.logger.DebugContext(ctx, "notify: new pulse", "title", e.Title)
	n.stats.consumed(e)
	return nil
}

// runStats counts what the example did, for the progress line and the
// summary.
type runStats struct {
	mu          sync.Mutex
	published   map[string]int // by wire name
	committedAt map[uuid.UUID]time.Time
	seen        map[uuid.UUID]int // notifications: deliveries per event id
	byKind      map[string]int    // notifications: distinct events per wire name
	latencies   []time.Duration   // commit to consume, first delivery
	relayed     int64
}

func newRunStats() *runStats {
	return &runStats{published: map[string]int{}, committedAt: map[uuid.UUID]time.Time{},
		seen: map[uuid.UUID]int{}, byKind: map[string]int{}}
}

func (s *runStats) committed(ev bus.Event, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.published[ev.EventName()]++
	s.committedAt[ev.Envelope().ID] = at
}

func (s *runStats) consumed(ev bus.Event) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	id := ev.Envelope().ID
	s.seen[id]++
	if s.seen[id] > 1 {
		return
	}
	s.byKind[ev.EventName()]++
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
