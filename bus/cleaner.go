package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/db"
)

// clean deletes relayed rows older than the retention, every CleanInterval.
func (r *Relay) clean(ctx context.Context, pool *pgxpool.Pool, lanes []int) {
	t := time.NewTicker(r.cfg.CleanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.cleanOnce(ctx, pool, lanes); err != nil && ctx.Err() == nil {
			r.logger.Error("Outbox cleaner failed", err, nil)
		}
	}
}

// CleanOnce deletes, in the given lanes, the rows older than the retention
// that the relay's consumer group has acknowledged, and returns how many.
func (r *Relay) CleanOnce(ctx context.Context, lanes []int) (int64, error) {
	return r.cleanOnce(ctx, r.cfg.Pool, lanes)
}

func (r *Relay) cleanOnce(ctx context.Context, pool *pgxpool.Pool, lanes []int) (int64, error) {
	var total int64
	for _, lane := range lanes {
		n, err := r.q.DeleteRelayedBefore(ctx, pool, db.DeleteRelayedBeforeParams{
			Lane:          int32(lane),
			ConsumerGroup: r.cfg.ConsumerGroup,
			OlderThan:     pgtype.Interval{Microseconds: r.cfg.Retention.Microseconds(), Valid: true},
		})
		if err != nil {
			return total, fmt.Errorf("bus: clean lane %d: %w", lane, err)
		}
		total += n
	}
	if total > 0 {
		r.logger.Debug("Outbox cleaned", watermill.LogFields{"deleted": total})
	}
	return total, nil
}
