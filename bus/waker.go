package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/schema"
)

// laneWaker is the watermill-sql BackoffManager of one lane: instead of
// sleeping a fixed poll interval when a query found nothing, it waits for a
// NOTIFY from a committing producer, the poll interval, or the relay's stop,
// whichever comes first.
type laneWaker struct {
	ctx           context.Context
	draining      <-chan struct{}
	idle          chan struct{}
	idleOnce      sync.Once
	wake          chan struct{}
	pollInterval  time.Duration
	retryInterval time.Duration
	mu            sync.Mutex
	lastWake      time.Time // of the last NOTIFY; zero before the first
	settle        int       // empty queries since lastWake
	// heldElsewhere is when a query last found the lane held by another
	// relay process, zero once this one found rows again: that process
	// settles the lane, this one does not (see settleDelay).
	heldElsewhere time.Time

	// failures counts consecutive transient publish failures; while there
	// are some, the lane waits out a backoff between batches, holding no
	// transaction (see HandleError).
	failures                   atomic.Int32
	backoffInitial, backoffMax time.Duration

	// busy is set when the last query found the lane held by another
	// relay process (see laneSchema).
	busy atomic.Bool
}

// laneBusy records that another relay process holds the lane.
func (w *laneWaker) laneBusy() { w.busy.Store(true) }

// newLaneWaker returns a waker that stops for good when ctx ends. Once
// draining is closed, the lane reads no new batch: the next time the
// subscriber asks how long to wait (its current batch is then committed or
// rolled back), the waker closes idle and blocks until ctx ends.
func newLaneWaker(ctx context.Context, draining <-chan struct{}, poll, retry, backoffInitial, backoffMax time.Duration) *laneWaker {
	return &laneWaker{ctx: ctx, draining: draining, idle: make(chan struct{}),
		wake: make(chan struct{}, 1), pollInterval: poll, retryInterval: retry,
		backoffInitial: backoffInitial, backoffMax: backoffMax}
}

// publishFailed records a transient publish failure of the lane.
func (w *laneWaker) publishFailed() { w.failures.Add(1) }

// outageBackoff is how long the lane pauses before its next batch while
// publishing fails, so that a lane in an outage does not re-read its batch
// and hold a connection in a tight loop. Zero when the last publish
// succeeded.
func (w *laneWaker) outageBackoff() time.Duration {
	n := w.failures.Load()
	if n == 0 {
		return 0
	}
	return doubled(w.backoffInitial, int(min(n, 64)), w.backoffMax)
}

// parkIfDraining blocks until the relay stops if it is draining, and
// reports whether it did.
func (w *laneWaker) parkIfDraining() bool {
	select {
	case <-w.draining:
		w.idleOnce.Do(func() { close(w.idle) })
		<-w.ctx.Done()
		return true
	default:
		return false
	}
}

// notify wakes the lane for a NOTIFY; it never blocks.
func (w *laneWaker) notify() {
	w.mu.Lock()
	w.lastWake = time.Now()
	w.settle = 0
	w.mu.Unlock()
	w.kick()
}

// kick makes the lane query at once, without the settling that follows a
// NOTIFY; it never blocks.
func (w *laneWaker) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// After a NOTIFY, a query may find nothing: a row committed just now is
// held back while an older transaction is still running anywhere in the
// cluster (watermill-sql reads only rows older than the snapshot's xmin),
// and that transaction's end sends no notification. So after a wake-up the
// lane keeps querying at growing intervals, from settleFirst up to
// settleMax (or the poll interval, if shorter), for settleWindow after the
// last wake-up, rather than sleep a whole poll interval: about 40 small
// index queries per lane once activity stops. (Another relay process may
// have taken the rows: see settleDelay.)
const (
	settleFirst  = 5 * time.Millisecond
	settleMax    = time.Second
	settleWindow = 30 * time.Second
)

// settleDelay returns the pause before the next query after an empty one,
// and whether the lane is settling after a wake-up at all.
//
// Only the relay process that drains the lane settles it. One that found
// the lane held by another process within settleWindow waits the poll
// interval or the next NOTIFY after an empty query: with n processes, each
// NOTIFY would otherwise cost n times the settling queries, and on a busy
// machine more processes drained a backlog more slowly. If the other
// process stops, this one takes the lane over at its next query and
// settles again once it has found rows.
func (w *laneWaker) settleDelay() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastWake.IsZero() || time.Since(w.lastWake) > settleWindow {
		return 0, false
	}
	if !w.heldElsewhere.IsZero() && time.Since(w.heldElsewhere) <= settleWindow {
		return 0, false
	}
	d := settleFirst << min(w.settle, 16)
	w.settle++
	return min(d, settleMax, w.pollInterval), true
}

// foundRows records that the lane found rows: if the next query finds
// none, the settling restarts from settleFirst (rows of the same wake-up
// may still be held back).
func (w *laneWaker) foundRows() {
	w.mu.Lock()
	w.settle = 0
	w.heldElsewhere = time.Time{}
	w.mu.Unlock()
}

// HandleError implements watermill-sql's BackoffManager.
func (w *laneWaker) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	d := w.handleError(logger, noMsg, err)
	if w.ctx.Err() != nil {
		// Stopping: a long backoff makes the subscriber's loop see its
		// cancelled context instead of racing it with one more query.
		return time.Hour
	}
	return d
}

func (w *laneWaker) handleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if w.parkIfDraining() {
		return 0
	}
	if d := w.outageBackoff(); d > 0 {
		w.waitOutage(d)
		return 0
	}
	if w.busy.Swap(false) {
		// Another relay process is relaying this lane: it goes on while
		// the lane has rows, and takes NOTIFYs as they come, so this one
		// looks again after a poll interval (to take over if that process
		// stopped), ignoring NOTIFYs meanwhile, and leaves the settling to
		// it.
		w.mu.Lock()
		w.heldElsewhere = time.Now()
		w.mu.Unlock()
		w.waitOutage(w.pollInterval)
		return 0
	}
	if err != nil {
		if w.ctx.Err() == nil {
			logger.Error("Error querying the outbox lane, retrying", err, watermill.LogFields{"wait_time": w.retryInterval})
		}
		w.wait(w.retryInterval)
		return 0
	}
	if !noMsg {
		w.foundRows()
		return 0
	}
	if d, settling := w.settleDelay(); settling {
		w.wait(d)
		return 0
	}
	w.wait(w.pollInterval)
	return 0
}

// waitOutage blocks for d or until the relay stops or drains; NOTIFY
// wake-ups do not shorten it.
func (w *laneWaker) waitOutage(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.ctx.Done():
	case <-w.draining:
		w.parkIfDraining()
	}
}

// wait blocks for d, until a wake-up, or until the relay stops.
func (w *laneWaker) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.wake:
	case <-w.ctx.Done():
	case <-w.draining:
		w.parkIfDraining()
	}
}

// listen LISTENs on the outbox channel on a dedicated connection of pool and
// wakes the lane whose table a notification names, until ctx ends. A lost
// connection is re-established after a pause; meanwhile polling goes on.
func listen(ctx context.Context, pool *pgxpool.Pool, set *laneSet, logger watermill.LoggerAdapter, ready chan<- struct{}) {
	var once sync.Once
	signalReady := func() { once.Do(func() { close(ready) }) }
	defer signalReady()
	for ctx.Err() == nil {
		err := listenOnce(ctx, pool, set, signalReady)
		if ctx.Err() != nil {
			return
		}
		logger.Error("LISTEN connection lost, relying on polling until it is back", err, nil)
		// Wake every lane: notifications may have been missed.
		set.kickAll()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func listenOnce(ctx context.Context, pool *pgxpool.Pool, set *laneSet, ready func()) error {
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection carries LISTEN state: never hand it back to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+schema.NotifyChannel); err != nil {
		return err
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload == schema.NotifyLanesChanged {
			select {
			case set.lanesChanged <- struct{}{}:
			default:
			}
		} else if w := set.waker(n.Payload); w != nil {
			w.notify()
		}
	}
}
