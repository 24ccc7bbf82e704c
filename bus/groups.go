package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/internal/db"
)

// ErrRelayGroupNotFound is returned by DropRelayGroup for a group that is
// neither registered nor has offsets.
var ErrRelayGroupNotFound = errors.New("relay group not found")

// RelayGroup is a relay consumer group registered in the database. The
// outbox cleaner deletes a row only once every registered group has
// acknowledged it.
type RelayGroup struct {
	// Name is the group's name (RelayConfig.ConsumerGroup).
	Name string
	// RegisteredAt is when a relay of the group first ran.
	RegisteredAt time.Time
	// LastSeenAt is when a relay of the group last started or ran a
	// cleaner pass (every RelayConfig.CleanInterval while the cleaner is
	// enabled).
	LastSeenAt time.Time
	// Backlog counts the outbox rows the group has not acknowledged, in
	// every lane: those the cleaner keeps for it.
	Backlog int64
}

// RegisterRelayGroup registers a relay consumer group, or records that it
// is still running. A relay registers its group when Run starts; register
// a group by hand to keep the outbox rows for it from now on, before its
// first relay runs (a new broker, say).
func RegisterRelayGroup(ctx context.Context, conn db.DBTX, group string) error {
	if group == "" {
		return errors.New("bus: register relay group: empty name")
	}
	if err := db.New().RegisterRelayGroup(ctx, conn, group); err != nil {
		return fmt.Errorf("bus: register relay group %q: %w", group, err)
	}
	return nil
}

// ListRelayGroups returns the registered relay groups, by name.
func ListRelayGroups(ctx context.Context, conn db.DBTX) ([]RelayGroup, error) {
	rows, err := db.New().ListRelayGroups(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("bus: list relay groups: %w", err)
	}
	groups := make([]RelayGroup, 0, len(rows))
	for _, r := range rows {
		groups = append(groups, RelayGroup{Name: r.ConsumerGroup, RegisteredAt: r.RegisteredAt.Time,
			LastSeenAt: r.LastSeenAt.Time, Backlog: r.Backlog})
	}
	return groups, nil
}

// DropRelayGroup retires a relay group: it deletes the group's
// registration and its offsets, so that the cleaner no longer keeps rows
// for it. It waits until no relay of the group is in the middle of a batch.
// Stop the group's relays first: a running relay registers its group again
// and relays the rows still stored from the start. It returns the time the
// group was last seen (zero if it had offsets but no registration), and an
// error wrapping ErrRelayGroupNotFound when the group has neither.
func DropRelayGroup(ctx context.Context, conn TxBeginner, group string) (lastSeen time.Time, err error) {
	q := db.New()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := q.LockRelayGroupLanes(ctx, tx, group); err != nil {
			return fmt.Errorf("lock the group's lanes: %w", err)
		}
		offsets, err := q.DeleteRelayGroupOffsets(ctx, tx, group)
		if err != nil {
			return fmt.Errorf("delete offsets: %w", err)
		}
		seen, err := q.DeleteRelayGroup(ctx, tx, group)
		switch {
		case errors.Is(err, pgx.ErrNoRows) && offsets == 0:
			return ErrRelayGroupNotFound
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("delete registration: %w", err)
		default:
			lastSeen = seen.Time
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("bus: drop relay group %q: %w", group, err)
	}
	return lastSeen, nil
}

// registerGroup registers the relay's consumer group (Run calls it first).
func (r *Relay) registerGroup(ctx context.Context) error {
	if err := r.q.RegisterRelayGroup(ctx, r.cfg.Pool, r.cfg.ConsumerGroup); err != nil {
		return fmt.Errorf("bus: relay: register relay group %q: %w", r.cfg.ConsumerGroup, err)
	}
	return nil
}
