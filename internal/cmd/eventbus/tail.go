package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/internal/db"
)

// notifyChannel is the channel the outbox's trigger notifies on commit
// (see schema/migrations).
const notifyChannel = "eventbus_outbox"

// tailBatch is the number of rows read per query.
const tailBatch = 500

func (a *app) tailFlags(fs *flag.FlagSet) {
	fs.IntVar(&a.tailN, "n", 10, "print the last `N` stored events first")
	fs.BoolVar(&a.tailFromStart, "from-start", false, "print every stored event first (overrides -n)")
	fs.BoolVar(&a.tailFollow, "follow", false, "keep printing events as they are committed, until interrupted")
	fs.BoolVar(&a.tailFollow, "f", false, "short for --follow")
	fs.BoolVar(&a.tailPretty, "pretty", false, "print each payload indented, on the lines under its event")
	fs.DurationVar(&a.tailInterval, "interval", time.Second, "with --follow, poll at least this often (commits also wake it up)")
}

// tailEvent is one outbox event as tail prints it.
type tailEvent struct {
	Offset        int64           `json:"offset,omitempty"`
	Lane          int             `json:"lane"`
	ID            string          `json:"id"`
	Name          string          `json:"name,omitempty"`
	Version       int             `json:"version,omitempty"`
	AggregateType string          `json:"aggregate_type,omitempty"`
	AggregateID   string          `json:"aggregate_id,omitempty"`
	OccurredAt    *time.Time      `json:"occurred_at,omitempty"`
	Topic         string          `json:"topic,omitempty"`
	TraceParent   string          `json:"traceparent,omitempty"`
	Payload       json.RawMessage `json:"payload"`
	// Error says why the event could not be decoded: an unknown name, a
	// malformed row or payload. Payload is then printed raw.
	Error string `json:"error,omitempty"`
}

// tailPos is a position in the outbox, in the relay's reading order.
type tailPos struct{ txid, offset int64 }

func (p tailPos) less(q tailPos) bool {
	return p.txid < q.txid || (p.txid == q.txid && p.offset < q.offset)
}

// settledBelow is the position just below transaction xmin: every row
// before it belongs to a transaction that has ended.
func settledBelow(xmin int64) tailPos { return tailPos{xmin - 1, math.MaxInt64} }

// tailer follows the outbox. Rows are read in the relay's order,
// (transaction id, offset); a transaction that commits late may add rows
// before rows already printed, so the tailer keeps a cursor below which
// every transaction has ended (the snapshot's xmin) and remembers the rows
// it printed above it.
type tailer struct {
	a      *app
	q      *db.Queries
	cursor tailPos
	seen   map[tailPos]bool
}

func (a *app) tail(ctx context.Context, _ []string) error {
	if a.tailN < 0 {
		return usagef("tail: -n %d: want zero or more", a.tailN)
	}
	if a.tailInterval <= 0 {
		return usagef("tail: --interval %s: want a positive duration", a.tailInterval)
	}
	pool, _, err := a.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	t := &tailer{a: a, q: db.New(), seen: map[tailPos]bool{}}
	if !a.tailFromStart {
		if err := t.last(ctx, pool); err != nil {
			return fmt.Errorf("tail: %w", err)
		}
	}
	var listener *pgxpool.Conn
	if a.tailFollow {
		// LISTEN wakes the loop up on every commit into the outbox; without
		// it, the loop polls.
		if c, err := pool.Acquire(ctx); err == nil {
			if _, err := c.Exec(ctx, "LISTEN "+notifyChannel); err == nil {
				listener = c
				defer c.Release()
			} else {
				c.Release()
			}
		}
	}
	for {
		if err := t.round(ctx, pool); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tail: %w", err)
		}
		if !a.tailFollow {
			return nil
		}
		if err := wait(ctx, listener, a.tailInterval); err != nil {
			return nil // interrupted: the normal end of --follow
		}
	}
}

// last prints the last -n rows and marks every row committed so far as
// seen, in one snapshot.
func (t *tailer) last(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		xmin, err := t.q.SnapshotXmin(ctx, tx)
		if err != nil {
			return err
		}
		var last []db.TailOutboxLastRow
		if t.a.tailN > 0 {
			if last, err = t.q.TailOutboxLast(ctx, tx, int32(t.a.tailN)); err != nil {
				return err
			}
		}
		slices.Reverse(last)
		for _, r := range last {
			if err := t.a.printRow(db.TailOutboxAfterRow(r)); err != nil {
				return err
			}
		}
		// Rows of transactions still running at xmin, committed already,
		// are old: remember them so that the rounds skip them.
		t.cursor = settledBelow(xmin)
		return t.read(ctx, tx, func(r db.TailOutboxAfterRow) error { return nil })
	})
}

// round prints the rows committed since the last round.
func (t *tailer) round(ctx context.Context, conn db.DBTX) error {
	// Taken first: transactions below xmin have ended before the rows are
	// read, so the reads see all their rows.
	xmin, err := t.q.SnapshotXmin(ctx, conn)
	if err != nil {
		return err
	}
	if err := t.read(ctx, conn, t.a.printRow); err != nil {
		return err
	}
	if next := settledBelow(xmin); t.cursor.less(next) {
		t.cursor = next
		for p := range t.seen {
			if !t.cursor.less(p) {
				delete(t.seen, p)
			}
		}
	}
	return nil
}

// read reads every row after the cursor and hands those not seen yet to
// fn, marking them seen.
func (t *tailer) read(ctx context.Context, conn db.DBTX, fn func(db.TailOutboxAfterRow) error) error {
	from := t.cursor
	for {
		rows, err := t.q.TailOutboxAfter(ctx, conn, db.TailOutboxAfterParams{
			AfterTransactionID: from.txid, AfterOffset: from.offset, MaxRows: tailBatch})
		if err != nil {
			return err
		}
		for _, r := range rows {
			p := tailPos{r.TransactionID, r.Offset}
			from = p
			if t.seen[p] {
				continue
			}
			t.seen[p] = true
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < tailBatch {
			return nil
		}
	}
}

// wait returns after interval, at a notification on listener (if any), or
// with ctx's error when it ends.
func wait(ctx context.Context, listener *pgxpool.Conn, interval time.Duration) error {
	if listener == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
			return nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, interval)
	defer cancel()
	_, err := listener.Conn().WaitForNotification(wctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		// The connection is gone: keep polling without it.
		time.Sleep(min(interval, 100*time.Millisecond))
	}
	return nil
}

// printRow decodes and prints one outbox row.
func (a *app) printRow(r db.TailOutboxAfterRow) error {
	ev := a.decodeRow(r)
	if a.jsonOut {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(a.stdout, a.formatEvent(ev))
	return err
}

// decodeRow reads an outbox row: a forwarder envelope around the event's
// message.
func (a *app) decodeRow(r db.TailOutboxAfterRow) tailEvent {
	topic, msg, err := bus.UnwrapOutboxPayload(r.Payload)
	if err != nil {
		ev := tailEvent{Offset: r.Offset, Lane: int(r.Lane), ID: r.Uuid, Payload: rawJSON(r.Payload), Error: err.Error()}
		var meta map[string]string
		if json.Unmarshal(r.Metadata, &meta) == nil {
			ev.Name = meta[bus.MetadataName]
			ev.AggregateID = meta[bus.MetadataAggregateID]
		}
		ev.OccurredAt = createdAt(r.CreatedAt)
		return ev
	}
	ev := a.decode(topic, msg)
	ev.Offset, ev.Lane = r.Offset, int(r.Lane)
	if ev.OccurredAt == nil {
		ev.OccurredAt = createdAt(r.CreatedAt)
	}
	return ev
}

func createdAt(ts pgtype.Timestamptz) *time.Time {
	if !ts.Valid {
		return nil
	}
	t := ts.Time.UTC()
	return &t
}

// decode reads an event's message, bound for the broker topic topic. It
// needs no event types: the message's metadata names the event and its
// version, and its payload is the event's JSON, printed as stored. With a
// registry (an application's generated one, see app.registry) the payload
// is decoded into the typed event and encoded again, as a consumer's
// handler would see it; an event the registry does not know is then
// printed as stored, saying so. An event that cannot be read keeps its raw
// payload and says why.
func (a *app) decode(topic string, msg *message.Message) tailEvent {
	ev := tailEvent{ID: msg.UUID, Topic: topic, Payload: rawJSON(msg.Payload), TraceParent: msg.Metadata.Get(bus.MetadataTraceParent)}
	env, name, version, err := bus.EnvelopeOf(msg)
	ev.Name, ev.Version = name, version
	ev.AggregateID = msg.Metadata.Get(bus.MetadataAggregateID)
	ev.AggregateType = msg.Metadata.Get(bus.MetadataAggregateType)
	if err == nil && !env.OccurredAt.IsZero() {
		t := env.OccurredAt.UTC()
		ev.OccurredAt = &t
	}
	if err != nil {
		ev.Error = err.Error()
		return ev
	}
	if a.registry == nil {
		if !json.Valid(msg.Payload) {
			ev.Error = "payload is not JSON: printed as a string"
		}
		return ev
	}
	decoded, err := a.registry.Decode(msg)
	if err != nil {
		ev.Error = err.Error()
		if errors.Is(err, bus.ErrUnknownEvent) || errors.Is(err, bus.ErrUnknownVersion) {
			ev.Error = "unknown event: printed raw"
		}
		return ev
	}
	// Re-encode the typed event: what a consumer's handler would see.
	if b, err := json.Marshal(decoded); err == nil {
		ev.Payload = b
	}
	return ev
}

// formatEvent formats an event on one line:
//
//	2026-01-02T15:04:05.000Z lane=1 edupulse.pulse.created/v1 pulse=<id> id=<id> {...}
func (a *app) formatEvent(ev tailEvent) string {
	var b strings.Builder
	if ev.OccurredAt != nil {
		b.WriteString(ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z"))
	} else {
		b.WriteString("-")
	}
	fmt.Fprintf(&b, " lane=%d ", ev.Lane)
	switch {
	case ev.Name == "":
		b.WriteString("(no name)")
	case ev.Version > 0:
		fmt.Fprintf(&b, "%s/v%d", ev.Name, ev.Version)
	default:
		b.WriteString(ev.Name)
	}
	if ev.AggregateID != "" {
		fmt.Fprintf(&b, " %s=%s", orDefault(ev.AggregateType, "aggregate"), ev.AggregateID)
	}
	fmt.Fprintf(&b, " id=%s", ev.ID)
	if ev.Error != "" {
		fmt.Fprintf(&b, " (%s)", ev.Error)
	}
	if a.tailPretty {
		var out bytes.Buffer
		if json.Indent(&out, ev.Payload, "  ", "  ") == nil {
			b.WriteString("\n  ")
			b.Write(out.Bytes())
			return b.String()
		}
	}
	b.WriteString(" ")
	b.Write(ev.Payload)
	return b.String()
}
