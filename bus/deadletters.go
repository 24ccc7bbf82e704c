package bus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// ErrDeadLetterNotFound is returned for a dead-letter id that does not exist.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// Errors of DeadLetters.Park.
var (
	// ErrUnknownLane: the outbox has no such lane.
	ErrUnknownLane = errors.New("unknown lane")
	// ErrUnknownRelayGroup: no relay of the group ever ran on the lane, so
	// it has no position there to move.
	ErrUnknownRelayGroup = errors.New("unknown relay group")
	// ErrLaneEmpty: the relay group has acknowledged every committed event
	// of the lane.
	ErrLaneEmpty = errors.New("no unacknowledged event in the lane")
)

// ParkedError starts the error text of a dead letter made by Park.
const ParkedError = "parked by an operator"

// DeadLetter is an outbox event that could never be published.
type DeadLetter struct {
	// ID identifies the dead letter.
	ID int64
	// Lane is the outbox lane the event came from.
	Lane int
	// MessageUUID is the outbox row's message UUID: the event id.
	MessageUUID string
	// EventName and AggregateID are read from the row's metadata, when it
	// had any.
	EventName   string
	AggregateID string
	// Payload is the outbox row's payload, as stored (Watermill's forwarder
	// envelope when well formed). Filled by Get only.
	Payload []byte
	// Metadata is the outbox row's metadata. Filled by Get only.
	Metadata map[string]string
	// Error is why the last attempt failed.
	Error string
	// Attempts counts the attempts to publish the event.
	Attempts int
	// FirstFailedAt and DeadAt are when the first attempt failed and when
	// the event was dead-lettered.
	FirstFailedAt time.Time
	DeadAt        time.Time
	// ReplayedAt is when the event was last sent back to the outbox, or
	// zero.
	ReplayedAt time.Time
}

// DeadLetters lists, fixes, replays and discards dead letters, and parks
// the event a lane is stuck on (Park).
type DeadLetters struct {
	db TxBeginnerQuerier
	q  *db.Queries
}

// TxBeginnerQuerier is a *pgxpool.Pool or a *pgx.Conn.
type TxBeginnerQuerier interface {
	TxBeginner
	db.DBTX
}

// NewDeadLetters returns the dead-letter API over a pool or connection.
func NewDeadLetters(conn TxBeginnerQuerier) *DeadLetters {
	return &DeadLetters{db: conn, q: db.New()}
}

// ListOptions filters List.
type ListOptions struct {
	// IncludeReplayed lists replayed dead letters too.
	IncludeReplayed bool
	// Limit caps the number of rows. Defaults to 100.
	Limit int
}

// List returns dead letters, oldest first, without payloads.
func (d *DeadLetters) List(ctx context.Context, opts ListOptions) ([]DeadLetter, error) {
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	rows, err := d.q.ListDeadLetters(ctx, d.db, db.ListDeadLettersParams{IncludeReplayed: opts.IncludeReplayed, MaxRows: int32(opts.Limit)})
	if err != nil {
		return nil, fmt.Errorf("bus: list dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(rows))
	for _, r := range rows {
		out = append(out, DeadLetter{
			ID: r.ID, Lane: int(r.Lane), MessageUUID: r.MessageUuid, EventName: r.EventName, AggregateID: r.AggregateID,
			Error: r.Error, Attempts: int(r.Attempts), FirstFailedAt: r.FirstFailedAt.Time, DeadAt: r.DeadAt.Time, ReplayedAt: r.ReplayedAt.Time,
		})
	}
	return out, nil
}

// Count returns the number of dead letters not replayed.
func (d *DeadLetters) Count(ctx context.Context) (int64, error) {
	n, err := d.q.CountDeadLetters(ctx, d.db)
	if err != nil {
		return 0, fmt.Errorf("bus: count dead letters: %w", err)
	}
	return n, nil
}

// Get returns one dead letter with its payload and metadata.
func (d *DeadLetters) Get(ctx context.Context, id int64) (DeadLetter, error) {
	return d.get(ctx, d.db, id)
}

func (d *DeadLetters) get(ctx context.Context, conn db.DBTX, id int64) (DeadLetter, error) {
	r, err := d.q.GetDeadLetter(ctx, conn, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: get dead letter %d: %w", id, err)
	}
	dl := DeadLetter{
		ID: r.ID, Lane: int(r.Lane), MessageUUID: r.MessageUuid, EventName: r.EventName, AggregateID: r.AggregateID,
		Payload: r.Payload, Error: r.Error, Attempts: int(r.Attempts),
		FirstFailedAt: r.FirstFailedAt.Time, DeadAt: r.DeadAt.Time, ReplayedAt: r.ReplayedAt.Time,
	}
	if len(r.Metadata) > 0 {
		if err := json.Unmarshal(r.Metadata, &dl.Metadata); err != nil {
			return DeadLetter{}, fmt.Errorf("bus: dead letter %d: metadata: %w", id, err)
		}
	}
	return dl, nil
}

// Fix replaces a dead letter's stored payload, to replay a corrected event.
// The payload must be a Watermill forwarder envelope: build it with
// WrapOutboxPayload (UnwrapOutboxPayload reads the stored one).
func (d *DeadLetters) Fix(ctx context.Context, id int64, payload []byte) error {
	if _, _, err := UnwrapOutboxPayload(payload); err != nil {
		return fmt.Errorf("bus: fix dead letter %d: %w", id, err)
	}
	n, err := d.q.UpdateDeadLetterPayload(ctx, d.db, db.UpdateDeadLetterPayloadParams{ID: id, Payload: payload})
	if err != nil {
		return fmt.Errorf("bus: fix dead letter %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("bus: fix dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	return nil
}

// Replay sends a dead letter back to its outbox lane, under the same
// message UUID, and marks it replayed, in one transaction. A payload that
// is still malformed is refused: Fix it first.
func (d *DeadLetters) Replay(ctx context.Context, id int64) error {
	return pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		dl, err := d.get(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, _, err := UnwrapOutboxPayload(dl.Payload); err != nil {
			return fmt.Errorf("bus: replay dead letter %d: fix the payload first: %w", id, err)
		}
		row := message.NewMessage(dl.MessageUUID, dl.Payload)
		for k, v := range dl.Metadata {
			row.Metadata[k] = v
		}
		q, err := wsql.DefaultPostgreSQLSchema{}.InsertQuery(schema.LaneTopic(dl.Lane), message.Messages{row})
		if err != nil {
			return fmt.Errorf("bus: replay dead letter %d: %w", id, err)
		}
		if _, err := tx.Exec(ctx, q.Query, q.Args...); err != nil {
			return fmt.Errorf("bus: replay dead letter %d into lane %d: %w", id, dl.Lane, err)
		}
		if err := d.q.MarkDeadLetterReplayed(ctx, tx, id); err != nil {
			return fmt.Errorf("bus: replay dead letter %d: %w", id, err)
		}
		return nil
	})
}

// ParkOptions configures DeadLetters.Park.
type ParkOptions struct {
	// Group is the relay consumer group whose position moves. Defaults to
	// ConsumerGroupDefault.
	Group string
}

// Park moves aside, by hand, the event a relay group is stuck on: the next
// event of lane the group has not acknowledged (in the order the relay
// reads the lane) becomes a dead letter, with an error saying an operator
// parked it and the attempts recorded so far, and the group's position
// moves past it, so that the relay goes on with the next event. It works
// while relays run: it first waits for the lane's batch in flight (the lock
// a relay holds while it relays a batch of the lane). The dead letter can
// be fixed and replayed like any other. Other relay groups are not
// affected: they still relay the event (and a replay sends it to them
// again, as a duplicate their consumers' inbox skips).
func (d *DeadLetters) Park(ctx context.Context, lane int, opts ParkOptions) (DeadLetter, error) {
	group := cmp.Or(opts.Group, ConsumerGroupDefault)
	laneGroup := LaneConsumerGroup(group, lane)
	var dl DeadLetter
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		// The offsets read below must see what the relay committed after
		// its batch: a snapshot per statement.
		if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"); err != nil {
			return err
		}
		lanes, err := schema.Lanes(ctx, tx)
		if err != nil {
			return err
		}
		if lane < 0 || lane >= lanes {
			return fmt.Errorf("%w (the outbox has lanes 0 to %d)", ErrUnknownLane, lanes-1)
		}
		if err := d.q.LockLaneGroup(ctx, tx, laneGroup); err != nil {
			return fmt.Errorf("lock the lane: %w", err)
		}
		pos, err := d.q.LaneGroupOffsetsForUpdate(ctx, tx, laneGroup)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w %q: it never relayed the lane", ErrUnknownRelayGroup, group)
		}
		if err != nil {
			return fmt.Errorf("read the relay group's position: %w", err)
		}
		row, err := d.q.NextLaneRow(ctx, tx, db.NextLaneRowParams{
			Lane: int32(lane), AfterTransactionID: pos.TransactionID, AfterOffset: pos.OffsetAcked})
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w for relay group %q", ErrLaneEmpty, group)
		}
		if err != nil {
			return fmt.Errorf("read the next event: %w", err)
		}
		id, err := d.park(ctx, tx, lane, row)
		if err != nil {
			return err
		}
		if dl, err = d.get(ctx, tx, id); err != nil {
			return err
		}
		err = d.q.AckLaneRow(ctx, tx, db.AckLaneRowParams{ConsumerGroup: laneGroup, OffsetAcked: row.Offset, TransactionID: row.TransactionID})
		if err != nil {
			return fmt.Errorf("move the relay group past the event: %w", err)
		}
		return nil
	})
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: park lane %d: %w", lane, err)
	}
	return dl, nil
}

// park writes an outbox row to the dead letters, in the layout the relay
// uses for the rows it dead-letters, with the attempts recorded for it
// (which it takes: a replay starts afresh), and returns its id.
func (d *DeadLetters) park(ctx context.Context, tx pgx.Tx, lane int, row db.NextLaneRowRow) (int64, error) {
	dl := DeadLetter{Lane: lane, MessageUUID: row.Uuid, Payload: row.Payload, Error: ParkedError, FirstFailedAt: time.Now()}
	if dl.Payload == nil {
		dl.Payload = []byte{}
	}
	if json.Unmarshal(row.Metadata, &dl.Metadata) != nil || dl.Metadata == nil {
		dl.Metadata = map[string]string{}
	}
	dl.EventName, dl.AggregateID = dl.Metadata[MetadataName], dl.Metadata[MetadataAggregateID]
	attempts, err := d.q.TakeAttempts(ctx, tx, db.TakeAttemptsParams{Lane: int32(lane), MessageUuid: row.Uuid})
	if err != nil {
		return 0, fmt.Errorf("read the event's attempts: %w", err)
	}
	for _, a := range attempts {
		dl.Attempts, dl.FirstFailedAt = int(a.Attempts), a.FirstFailedAt.Time
		if a.LastError != "" {
			dl.Error += "; last error: " + a.LastError
		}
	}
	meta, err := marshalMetadata(dl.Metadata)
	if err != nil {
		return 0, err
	}
	id, err := d.q.InsertDeadLetter(ctx, tx, db.InsertDeadLetterParams{
		Lane:          int32(lane),
		MessageUuid:   dl.MessageUUID,
		EventName:     dl.EventName,
		AggregateID:   dl.AggregateID,
		Payload:       dl.Payload,
		Metadata:      meta,
		Error:         dl.Error,
		Attempts:      int32(dl.Attempts),
		FirstFailedAt: pgtype.Timestamptz{Time: dl.FirstFailedAt, Valid: true},
	})
	if err != nil {
		return 0, fmt.Errorf("dead-letter event %s: %w", row.Uuid, err)
	}
	return id, nil
}

// Discard deletes a dead letter for good.
func (d *DeadLetters) Discard(ctx context.Context, id int64) error {
	n, err := d.q.DeleteDeadLetter(ctx, d.db, id)
	if err != nil {
		return fmt.Errorf("bus: discard dead letter %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("bus: discard dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	return nil
}

func marshalMetadata(m map[string]string) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal metadata: %w", err)
	}
	return b, nil
}
