package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/schema"
)

// refusingPublisher fails, as a broker outage would (not permanently), every
// publish of one event while refusing is set, and signals its first refusal.
type refusingPublisher struct {
	message.Publisher
	id       string
	refusing atomic.Bool
	refused  chan struct{}
}

func (p *refusingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if m.UUID == p.id && p.refusing.Load() {
			select {
			case p.refused <- struct{}{}:
			default:
			}
			return errors.New("broker refuses this one event, forever")
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

// TestParkMovesAStuckLaneOn: a lane whose head event the broker refuses
// (not permanently: the relay retries it for as long as that lasts) is
// moved on by hand with DeadLetters.Park while the relay runs (with the
// default AckDeadline, which bounds Park's wait for the batch in flight):
// the next event is delivered, the parked one is a dead letter, and
// replaying it delivers it.
func TestParkMovesAStuckLaneOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	col := newCollector(t, gc)
	stuck, next := pulseCreated(uuid.New(), "stuck"), pulseCreated(uuid.New(), "next")
	stuckID, nextID := stuck.Envelope().ID.String(), next.Envelope().ID.String()
	pub := &refusingPublisher{Publisher: gc, id: stuckID, refused: make(chan struct{}, 1)}
	pub.refusing.Store(true)
	for _, ev := range []bus.Event{stuck, next} {
		if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) { return []bus.Event{ev}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	runRelay(t, bus.RelayConfig{Pool: pool, Publisher: pub})
	select {
	case <-pub.refused:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay never tried the head event")
	}

	dls := bus.NewDeadLetters(pool)
	start := time.Now()
	dl, err := dls.Park(ctx, 0, bus.ParkOptions{})
	if err != nil {
		t.Fatalf("park: %v", err)
	}
	t.Logf("park took %s", time.Since(start))
	if dl.ID == 0 || dl.Lane != 0 || dl.MessageUUID != stuckID || dl.EventName != stuck.EventName() ||
		dl.AggregateID != stuck.Envelope().AggregateID || !strings.HasPrefix(dl.Error, bus.ParkedError) || dl.DeadAt.IsZero() {
		t.Fatalf("parked dead letter: %+v", dl)
	}
	// The attempts the relay recorded go with it.
	if dl.Attempts == 0 || !strings.Contains(dl.Error, "; last error: ") || !strings.Contains(dl.Error, "broker refuses this one event") {
		t.Errorf("parked dead letter: %d attempts, error %q; want the relay's attempts and last error", dl.Attempts, dl.Error)
	}
	if _, _, err := bus.UnwrapOutboxPayload(dl.Payload); err != nil || dl.Metadata[bus.MetadataName] != stuck.EventName() {
		t.Fatalf("parked dead letter keeps the outbox row: payload %v, metadata %v", err, dl.Metadata)
	}

	col.waitDistinct(1, 30*time.Second)
	t.Logf("next delivered after %s", time.Since(start))
	got, seen := col.snapshot()
	if got[0].ID != nextID || seen[stuckID] != 0 {
		t.Fatalf("after parking: delivered %v; want the next event only", seen)
	}
	list, err := dls.List(ctx, bus.ListOptions{})
	if err != nil || len(list) != 1 || list[0].ID != dl.ID || list[0].MessageUUID != stuckID {
		t.Fatalf("dead letters after parking: %+v, %v", list, err)
	}

	// Replayed once the broker takes it, it is delivered.
	pub.refusing.Store(false)
	if err := dls.Replay(ctx, dl.ID); err != nil {
		t.Fatalf("replay: %v", err)
	}
	col.waitDistinct(2, 30*time.Second)
	if _, seen := col.snapshot(); seen[stuckID] == 0 {
		t.Fatalf("after the replay: delivered %v", seen)
	}
	if replayed, err := dls.Get(ctx, dl.ID); err != nil || replayed.ReplayedAt.IsZero() {
		t.Fatalf("dead letter after the replay: %+v, %v", replayed, err)
	}
}

// TestParkErrors: an unknown lane, a group that never relayed the lane, a
// lane with nothing unacknowledged, and a row held back by a running
// transaction (which the relay does not see yet either).
func TestParkErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 2)
	dls := bus.NewDeadLetters(pool)
	if _, err := dls.Park(ctx, 2, bus.ParkOptions{}); !errors.Is(err, bus.ErrUnknownLane) || !strings.Contains(err.Error(), "lanes 0 to 1") {
		t.Errorf("park lane 2 of 2: %v", err)
	}
	if _, err := dls.Park(ctx, -1, bus.ParkOptions{}); !errors.Is(err, bus.ErrUnknownLane) {
		t.Errorf("park lane -1: %v", err)
	}
	if _, err := dls.Park(ctx, 0, bus.ParkOptions{}); !errors.Is(err, bus.ErrUnknownRelayGroup) || !strings.Contains(err.Error(), bus.ConsumerGroupDefault) {
		t.Errorf("park before any relay ran: %v", err)
	}
	// A relay ran (and relayed nothing): its position is the lane's start.
	stop := runRelay(t, bus.RelayConfig{Pool: pool, Publisher: newGoChannel(t)})
	waitFor(t, "the relay's positions", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM `+schema.OffsetsTable).Scan(&n)
		return err == nil && n == 2
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := dls.Park(ctx, 0, bus.ParkOptions{}); !errors.Is(err, bus.ErrLaneEmpty) {
		t.Errorf("park an empty lane: %v", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	ev := pulseCreated(uuid.New(), "uncommitted")
	if err := ob.Publish(ctx, tx, ev); err != nil {
		t.Fatal(err)
	}
	lane := bus.LaneOf(ev.Envelope().AggregateID, 2)
	if _, err := dls.Park(ctx, lane, bus.ParkOptions{}); !errors.Is(err, bus.ErrLaneEmpty) {
		t.Errorf("park a lane whose only row is not committed: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dls.Park(ctx, lane, bus.ParkOptions{Group: "other"}); !errors.Is(err, bus.ErrUnknownRelayGroup) {
		t.Errorf("park for a group that never ran: %v", err)
	}
	// Committed, the row is visible once every older transaction of the
	// cluster ended (other tests' too), as for the relay.
	var dl bus.DeadLetter
	waitFor(t, "the committed row to be parked", func() bool {
		dl, err = dls.Park(ctx, lane, bus.ParkOptions{Group: bus.ConsumerGroupDefault})
		return !errors.Is(err, bus.ErrLaneEmpty)
	})
	if err != nil || dl.MessageUUID != ev.Envelope().ID.String() || dl.Attempts != 0 || dl.Error != bus.ParkedError {
		t.Fatalf("park the committed row: %+v, %v", dl, err)
	}
	if _, err := dls.Park(ctx, lane, bus.ParkOptions{}); !errors.Is(err, bus.ErrLaneEmpty) {
		t.Errorf("park the lane again: %v", err)
	}
	var acked string
	if err := pool.QueryRow(ctx, `SELECT offset_acked || '/' || last_processed_transaction_id FROM `+schema.OffsetsTable+` WHERE consumer_group = $1`,
		bus.LaneConsumerGroup(bus.ConsumerGroupDefault, lane)).Scan(&acked); err != nil || strings.HasPrefix(acked, "0/") {
		t.Errorf("offsets after parking: %q, %v", acked, err)
	}
}
