package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// ErrDeadLetterNotFound is returned for a dead-letter id that does not exist.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

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

// DeadLetters lists, fixes, replays and discards dead letters.
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
// The payload must be a Watermill forwarder envelope (see
// UnwrapOutboxPayload).
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
