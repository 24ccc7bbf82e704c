package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/db"
)

// publishAttempts is the relay's retry middleware for one lane. It
// replaces Watermill's middleware.Retry for two reasons: the attempt count
// must survive the batch (a batch given up after AckDeadline, a relay
// restart), so it is kept in eventbus_attempts rather than in the message,
// and the backoff between attempts follows that count (Watermill's Retry
// restarts its backoff with every batch and, with ShouldRetry set, advances
// it twice per attempt).
//
// A failure marked Permanent is retried until the row has been tried
// MaxAttempts times, counting earlier batches and processes; the error is
// then returned, still permanent, to the poison-queue middleware, which
// dead-letters the row. Any other failure is retried for as long as it
// lasts, until the batch's AckDeadline ends the message's context.
type publishAttempts struct {
	relay  *Relay
	pool   *pgxpool.Pool
	lane   int
	waker  *laneWaker
	logger watermill.LoggerAdapter
}

func (a publishAttempts) middleware(h message.HandlerFunc) message.HandlerFunc {
	cfg := a.relay.cfg
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		failedBefore := false
		for {
			out, err := h(msg)
			if err == nil {
				a.relay.published.Add(1)
				a.waker.failures.Store(0)
				if failedBefore {
					a.forget(msg)
				}
				return out, nil
			}
			failedBefore = true
			a.relay.failed.Add(1)
			permanent := IsPermanent(err)
			if !permanent {
				a.waker.publishFailed()
			}
			n, first := a.record(msg, err)
			msg.Metadata.Set(metadataAttempts, strconv.Itoa(n))
			msg.Metadata.Set(metadataFirstFailedAt, first.UTC().Format(time.RFC3339Nano))
			giveUp := permanent && n >= cfg.MaxAttempts
			delay := backoffDelay(n, cfg.BackoffInitial, cfg.BackoffMax)
			// Log the first failure and then every tenth, without the stack
			// traces Watermill's errors carry.
			if n%10 == 1 || giveUp {
				a.logger.Error("Publishing an event failed", errors.New(err.Error()), watermill.LogFields{
					"uuid": msg.UUID, "attempt": n, "permanent": permanent, "dead_letter": giveUp, "next_delay": delay})
			}
			if giveUp {
				return nil, err
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				// The batch was given up (AckDeadline) or the relay stops:
				// the row is read again later, its count kept. The error
				// must not be permanent, or it would be dead-lettered now.
				return nil, fmt.Errorf("publish %s: gave up after attempt %d: %w (last error: %s)", msg.UUID, n, ctx.Err(), err.Error())
			}
		}
	}
}

// record counts a failed attempt in eventbus_attempts and returns the
// count and when the row first failed. If the database cannot be written,
// it still returns a count that moves forward.
func (a publishAttempts) record(msg *message.Message, cause error) (int, time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), 5*time.Second)
	defer cancel()
	row, err := a.relay.q.RecordAttempt(ctx, a.pool, db.RecordAttemptParams{
		Lane: int32(a.lane), MessageUuid: msg.UUID, LastError: truncateError(cause.Error()),
	})
	if err != nil {
		a.logger.Error("Recording a failed publish attempt", err, watermill.LogFields{"uuid": msg.UUID})
		n, _ := strconv.Atoi(msg.Metadata.Get(metadataAttempts))
		first, perr := time.Parse(time.RFC3339Nano, msg.Metadata.Get(metadataFirstFailedAt))
		if perr != nil {
			first = time.Now()
		}
		return n + 1, first
	}
	return int(row.Attempts), row.FirstFailedAt.Time
}

// forget deletes the row's failed attempts once it was published.
func (a publishAttempts) forget(msg *message.Message) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), 5*time.Second)
	defer cancel()
	if err := a.relay.q.DeleteAttempts(ctx, a.pool, db.DeleteAttemptsParams{Lane: int32(a.lane), MessageUuid: msg.UUID}); err != nil {
		a.logger.Error("Forgetting the failed attempts of a published event", err, watermill.LogFields{"uuid": msg.UUID})
	}
}

// backoffDelay is the pause after the n-th failed attempt: initial × 2^(n-1),
// at most max, with ±50% jitter so that lanes and processes retrying the
// same broker spread out.
func backoffDelay(n int, initial, ceiling time.Duration) time.Duration {
	d := doubled(initial, n-1, ceiling)
	jitter := backoffRandomization * float64(d)
	return time.Duration(float64(d) - jitter + rand.Float64()*2*jitter)
}

// doubled is initial doubled n times (none for n <= 0), at most ceiling;
// it doubles step by step, so that a large n or initial cannot overflow.
func doubled(initial time.Duration, n int, ceiling time.Duration) time.Duration {
	d := initial
	for i := 0; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// truncateError keeps stored error texts to a sane size.
func truncateError(s string) string {
	const limit = 4096
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
