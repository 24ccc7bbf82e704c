package bus

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// Regression (issue 9.5, seen in CI): a lane that found another relay
// process on it still polled every few milliseconds after each NOTIFY
// (the settling meant for rows an older transaction holds back), so five
// relays made about four times the empty queries of one and drained a
// backlog slower on a busy machine. The process that holds the lane
// settles it; one that found the lane held waits the poll interval, or the
// next NOTIFY.
func TestLaneFoundHeldDoesNotSettle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newLaneWaker(ctx, make(chan struct{}), time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond)
	logger := watermill.NopLogger{}

	w.notify()
	if _, settling := w.settleDelay(); !settling {
		t.Fatal("a lane woken by NOTIFY does not settle")
	}
	w.laneBusy() // the query found the lane held by another process
	w.handleError(logger, true, nil)
	if d, settling := w.settleDelay(); settling {
		t.Fatalf("after finding the lane held, an empty query settles (next query in %v); want the poll interval", d)
	}

	// A NOTIFY after the lane was found held does not restart settling
	// either, until settleWindow has passed since.
	w.notify()
	if _, settling := w.settleDelay(); settling {
		t.Fatal("a NOTIFY right after the lane was found held restarts settling")
	}

	// Rows found again (this process holds the lane now): it settles.
	w.foundRows()
	w.notify()
	if _, settling := w.settleDelay(); !settling {
		t.Fatal("a lane that found rows after being held elsewhere does not settle")
	}
}
