package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// outageError marks an error caused by unavailable infrastructure.
type outageError struct{ err error }

func (e outageError) Error() string { return e.err.Error() }
func (e outageError) Unwrap() error { return e.err }

// Outage marks err as caused by infrastructure that is unavailable for a
// while (a database, a broker, a service the handler calls), not by the
// message: a consumer retries a handler that fails with such an error for
// as long as the outage lasts, with backoff up to BackoffMax, and does not
// count these attempts against MaxRetries or dead-letter the message.
// Handlers wrap the errors of their own dependencies with it; the
// consumer's own database errors are recognised without it (see IsOutage).
// Outage(nil) is nil.
func Outage(err error) error {
	if err == nil {
		return nil
	}
	return outageError{err}
}

// IsOutage reports whether err, or an error it wraps, was marked with
// Outage, or says that a PostgreSQL server could not be reached or that the
// connection to it was lost: a connection that failed (refused, timed out,
// authentication rejected: *pgconn.ConnectError), an error pgconn reports
// as raised before anything was sent (pgconn.SafeToRetry), a closed
// connection, or a server error of SQLSTATE class 08 (connection
// exception), 53 (insufficient resources, such as too many connections),
// 57P01 to 57P03 (the server shuts down, crashed or is starting) or 58
// (system error), or 25006 (a read-only server, as after a failover). The
// end of the caller's own context (context.Canceled, DeadlineExceeded) is
// not an outage unless it cut a connection attempt short.
func IsOutage(err error) bool {
	var o outageError
	if errors.As(err, &o) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgOutageCode(pgErr.Code)
	}
	return errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err)
}

// pgOutageCode reports whether a SQLSTATE says the server is unavailable
// rather than that the statement failed.
func pgOutageCode(code string) bool {
	switch {
	case len(code) != 5:
		return false
	case code[:2] == "08", code[:2] == "53", code[:2] == "58":
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "25006":
		return true
	}
	return false
}

// inboxTx runs fn in a transaction on the consumer's Pool and commits it,
// as pgx.BeginFunc does, and marks with Outage the failures that are not
// fn's doing: a connection lost while fn ran, and a COMMIT whose outcome is
// unknown (the connection dropped before the server's answer arrived). The
// consumer retries those; the inbox row that fn's transaction claims tells
// on the next attempt whether the commit went through.
func (c *Consumer) inboxTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := c.cfg.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("inbox: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		// A connection lost under fn, however fn wrapped the error: not
		// the handler's failure. (A context that ended closes the
		// connection too; that is a timeout, judged by the retry loop.)
		lost := tx.Conn().IsClosed() && ctx.Err() == nil
		if rbErr := tx.Rollback(ctx); rbErr != nil && IsOutage(rbErr) && ctx.Err() == nil {
			lost = true
		}
		if lost && !IsPermanent(err) {
			return Outage(fmt.Errorf("inbox: connection lost: %w", err))
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		switch {
		case errors.Is(err, pgx.ErrTxCommitRollback), errors.As(err, &pgErr) && !pgOutageCode(pgErr.Code):
			// The server answered: the transaction is rolled back.
			return fmt.Errorf("inbox: commit: %w", err)
		case ctx.Err() != nil && pgconn.SafeToRetry(err):
			// The attempt ended before COMMIT was sent: rolled back.
			return fmt.Errorf("inbox: commit: %w", err)
		}
		return Outage(fmt.Errorf("inbox: commit, outcome unknown (the inbox settles it on the next attempt): %w", err))
	}
	return nil
}

// probeTimeoutMax bounds the ping that tells whether the inbox database is
// reachable after an attempt failed for no recognised reason.
const probeTimeoutMax = 5 * time.Second

// laterCountsMax bounds the messages whose postponements are counted.
const laterCountsMax = 4096

// consumerRetry is the consumer's retry middleware. It replaces
// Watermill's middleware.Retry (whose backoff, with ShouldRetry set,
// advances two steps per attempt) and Timeout, and tells three kinds of
// failure apart:
//
//   - the handler's own errors are retried MaxRetries times, with backoff
//     from BackoffInitial to BackoffMax, and the message is then returned
//     to the dead-letter middleware; a Permanent error is returned at once;
//   - an outage (IsOutage, or an attempt that failed while the inbox
//     database does not answer a ping) is retried with the same backoff for
//     as long as it lasts, without counting against MaxRetries: a message
//     is never dead-lettered because the database or the broker is down;
//   - an event without a handler under UnknownVersionRetry is nacked after
//     a backoff that grows with each delivery of the message.
//
// When the consumer stops, the message is nacked at once, and redelivered
// later: an attempt in flight is cut short, and a wait is not finished.
type consumerRetry struct {
	c    *Consumer
	stop context.Context // ends when the consumer starts stopping

	mu    sync.Mutex
	later map[string]int // postponements by message UUID
}

func newConsumerRetry(c *Consumer, stop context.Context) *consumerRetry {
	return &consumerRetry{c: c, stop: stop, later: map[string]int{}}
}

func (r *consumerRetry) middleware(h message.HandlerFunc) message.HandlerFunc {
	c := r.c
	return func(msg *message.Message) ([]*message.Message, error) {
		base := msg.Context()
		var failures, outages int
		for {
			out, err, timedOut := r.attempt(h, msg, base)
			if err == nil {
				r.forgetLater(msg.UUID)
				return out, nil
			}
			if r.stopping(base) {
				return r.nack(msg, "the consumer is stopping")
			}
			var later retryLaterError
			if errors.As(err, &later) {
				n := r.postpone(msg.UUID)
				delay := backoffDelay(n, c.cfg.BackoffInitial, c.cfg.BackoffMax)
				if n%10 == 1 {
					c.cfg.Logger.Warn("No handler for this event; it is nacked for redelivery (UnknownVersionRetry)",
						"consumer_group", c.cfg.Group, "uuid", msg.UUID, "reason", err.Error(), "delivery", n, "delay", delay)
				}
				c.postponed.Add(1)
				r.sleep(base, delay)
				return r.nack(msg, "")
			}
			c.failed.Add(1)
			var delay time.Duration
			switch {
			case IsPermanent(err):
				c.logger.Error("Handler failed", errors.New(err.Error()), watermill.LogFields{
					"uuid": msg.UUID, "permanent": true, "dead_letter": true})
				return nil, err
			case r.isOutage(msg, base, err, timedOut):
				outages++
				c.outageRetries.Add(1)
				delay = backoffDelay(outages, c.cfg.BackoffInitial, c.cfg.BackoffMax)
				if outages%10 == 1 {
					c.cfg.Logger.Warn("Handler attempt failed on an outage; retrying until it ends, without dead-lettering",
						"consumer_group", c.cfg.Group, "uuid", msg.UUID, "error", err.Error(), "attempt", outages, "next_delay", delay)
				}
			default:
				failures++
				giveUp := failures > c.cfg.MaxRetries
				delay = backoffDelay(failures, c.cfg.BackoffInitial, c.cfg.BackoffMax)
				if failures == 1 || giveUp {
					c.logger.Error("Handler failed", errors.New(err.Error()), watermill.LogFields{
						"uuid": msg.UUID, "permanent": false, "retry": failures, "dead_letter": giveUp})
				}
				if giveUp {
					return nil, err
				}
			}
			if !r.sleep(base, delay) {
				return r.nack(msg, "the consumer is stopping")
			}
		}
	}
}

// attempt runs the handlers once, under HandlerTimeout, and cut short when
// the consumer stops. timedOut reports that HandlerTimeout ended it.
func (r *consumerRetry) attempt(h message.HandlerFunc, msg *message.Message, base context.Context) (out []*message.Message, err error, timedOut bool) {
	ctx, cancel := context.WithTimeout(base, r.c.cfg.HandlerTimeout)
	defer cancel()
	defer context.AfterFunc(r.stop, cancel)()
	msg.SetContext(ctx)
	defer msg.SetContext(base)
	out, err = h(msg)
	return out, err, errors.Is(ctx.Err(), context.DeadlineExceeded) && base.Err() == nil && r.stop.Err() == nil
}

// isOutage tells an outage from the handler's own failure. Errors are
// classified by IsOutage; an attempt that used the inbox and failed for
// another reason (a timeout against a server that stopped answering, an
// error wrapped without %w) is an outage too if the inbox database does not
// answer a ping now.
func (r *consumerRetry) isOutage(msg *message.Message, base context.Context, err error, timedOut bool) bool {
	if IsOutage(err) {
		return true
	}
	c := r.c
	if c.cfg.Pool == nil || !c.usesInbox(msg) {
		return false
	}
	ctx, cancel := context.WithTimeout(base, min(c.cfg.HandlerTimeout, probeTimeoutMax))
	defer cancel()
	defer context.AfterFunc(r.stop, cancel)()
	pingErr := c.cfg.Pool.Ping(ctx)
	if pingErr != nil && !r.stopping(base) {
		c.cfg.Logger.Warn("Inbox database does not answer after a failed attempt: taken for an outage",
			"consumer_group", c.cfg.Group, "uuid", msg.UUID, "error", err.Error(), "ping", pingErr.Error(), "timed_out", timedOut)
		return true
	}
	return false
}

// usesInbox reports whether msg's event has OnTx handlers.
func (c *Consumer) usesInbox(msg *message.Message) bool {
	v, err := strconv.Atoi(msg.Metadata.Get(MetadataVersion))
	if err != nil {
		return false
	}
	return len(c.routes[typeKey{msg.Metadata.Get(MetadataName), v}].tx) > 0
}

func (r *consumerRetry) stopping(base context.Context) bool {
	return r.stop.Err() != nil || r.c.stopping.Load() || base.Err() != nil
}

// sleep waits d, and reports false if the consumer stopped first.
func (r *consumerRetry) sleep(base context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !r.stopping(base)
	case <-base.Done():
	case <-r.stop.Done():
	}
	return false
}

// nack nacks msg, so that the broker delivers it again, and returns no
// error: the dead-letter middleware must not see one.
func (r *consumerRetry) nack(msg *message.Message, why string) ([]*message.Message, error) {
	msg.Nack()
	if why != "" {
		r.c.cfg.Logger.Info("Message nacked, to be redelivered", "consumer_group", r.c.cfg.Group, "uuid", msg.UUID, "why", why)
	}
	return nil, nil
}

// postpone counts one more postponement of the message and returns the
// count.
func (r *consumerRetry) postpone(uuid string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.later) >= laterCountsMax {
		clear(r.later) // messages handled elsewhere meanwhile: start over
	}
	r.later[uuid]++
	return r.later[uuid]
}

func (r *consumerRetry) forgetLater(uuid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.later, uuid)
}
