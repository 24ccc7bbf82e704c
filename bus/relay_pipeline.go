package bus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// lanePipeline keeps several events of one lane in flight to the broker.
// It is the message.Subscriber the lane's forwarder reads, in front of the
// lane's watermill-sql subscriber.
//
// watermill-sql's subscriber hands out one row at a time and waits for its
// ack; Watermill's router runs its handler in a goroutine of its own for
// every message it receives. The pipeline acknowledges a row to the
// subscriber as soon as it takes it, and hands the router a copy; the
// forwarder's outermost middleware (middleware) sees whether the broker
// confirmed the event (or it was dead-lettered). So the subscriber hands out rows as fast as the pipeline
// takes them, and the router publishes them concurrently, with these
// bounds:
//
//   - at most depth rows of the lane are taken and not yet resolved;
//   - an aggregate has at most one event in flight: a row waits until the
//     aggregate's row before it was confirmed, and when that row fails
//     instead, it is not sent in this batch at all;
//   - once a row of a batch failed (its AckDeadline ended, the relay
//     stops), the rows of the batch not yet sent are skipped.
//
// The offset is written once per batch by watermill-sql, after the batch's
// rows were handed out: the lane's offsets adapter then waits in settle
// until every row of the batch is resolved, and acknowledges the longest
// prefix of the batch that the broker confirmed. The rows after it (those
// that failed or were skipped, and those confirmed after a failed one) are
// read again by the next batch. A failed row is thus always read again
// before any later row of its aggregate. The rows the broker had confirmed
// are not sent again when the next batch reads them (it resolves them in
// their aggregate's turn); after a crash or a takeover by another relay
// process they are (at least once).
type lanePipeline struct {
	sub      message.Subscriber
	depth    int
	deadline time.Duration
	logger   watermill.LoggerAdapter

	// ctx is the subscription's; rows in flight end with it.
	ctx     context.Context
	closing chan struct{}
	close   sync.Once

	mu      sync.Mutex
	batch   *laneBatch
	pending int                  // rows taken and not resolved, of every batch
	tails   map[string]*relayRow // the last unresolved row of each aggregate
	ready   []*relayRow          // rows free to be sent, in the order taken
	// confirmed holds the offsets of rows the broker confirmed that the
	// last settled batch could not acknowledge (a row before them
	// failed): when the next batch reads them again, they are not sent
	// again.
	confirmed map[int64]bool

	// wakeRun and wakeSettle are signalled when a row is resolved.
	wakeRun, wakeSettle chan struct{}
}

// laneBatch is the rows of one watermill-sql query of a lane.
type laneBatch struct {
	rows   []batchRow  // read by the subscriber, in order
	taken  []*relayRow // handed out by the subscriber and taken, in order
	open   int         // rows of taken not resolved yet
	broken bool        // a row failed: rows not yet sent are skipped
	closed bool        // settled, or the lane stops: rows not yet sent are skipped
}

// batchRow is a row of a batch as the subscriber read it, with its
// transaction id (the position the lane's offset records with it).
type batchRow struct {
	wsql.Row
	transactionID int64
}

// indexOf returns the index in b.rows of the row whose message the
// subscriber handed out as the taken-th of the batch, or -1. The
// subscriber hands rows out in the order it read them, so it is taken.
func (b *laneBatch) indexOf(msg *message.Message, taken int) int {
	if taken < len(b.rows) && b.rows[taken].Msg == msg {
		return taken
	}
	for i := range b.rows {
		if b.rows[i].Msg == msg {
			return i
		}
	}
	return -1
}

type rowState int

const (
	rowWaiting   rowState = iota // taken, not sent yet
	rowSent                      // handed to the router
	rowPublished                 // the broker confirmed it, or it was dead-lettered
	rowFailed                    // the router nacked it
	rowSkipped                   // never sent
)

// relayRow is one row taken from the subscriber.
type relayRow struct {
	src *message.Message // as the subscriber handed it out
	out *message.Message // the copy handed to the router
	// cancel ends out's context; the row's AckDeadline starts when out
	// is made.
	cancel context.CancelFunc
	key    string // aggregate id; "" for none
	batch  *laneBatch
	row    int // index of the row in batch.rows; -1 if it is not there
	// known: the broker confirmed the row in an earlier batch; it is
	// resolved as published, in its aggregate's turn, without being sent.
	known bool
	next  *relayRow // the aggregate's next row, waiting for this one
	state rowState
}

func newLanePipeline(sub message.Subscriber, depth int, deadline time.Duration, logger watermill.LoggerAdapter) *lanePipeline {
	return &lanePipeline{
		sub: sub, depth: depth, deadline: deadline, logger: logger,
		ctx: context.Background(), closing: make(chan struct{}),
		batch: newLaneBatch(), tails: map[string]*relayRow{}, confirmed: map[int64]bool{},
		wakeRun: make(chan struct{}, 1), wakeSettle: make(chan struct{}, 1),
	}
}

// Subscribe implements message.Subscriber.
func (p *lanePipeline) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	in, err := p.sub.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go p.run(ctx, in, out)
	return out, nil
}

// Close implements message.Subscriber.
func (p *lanePipeline) Close() error {
	p.close.Do(func() { close(p.closing) })
	return p.sub.Close()
}

// run takes rows from in while there is room and sends the rows that are
// free to go to out, until in closes or ctx ends.
func (p *lanePipeline) run(ctx context.Context, in <-chan *message.Message, out chan<- *message.Message) {
	defer close(out)
	for {
		p.mu.Lock()
		pending := p.pending
		next := p.nextReadyLocked()
		room := p.pending < p.depth
		resolved := p.pending < pending // rows skipped, or known to be confirmed
		p.mu.Unlock()
		if resolved {
			p.wake()
		}
		var inCh <-chan *message.Message
		if room {
			inCh = in
		}
		var outCh chan<- *message.Message
		var outMsg *message.Message
		if next != nil {
			outCh, outMsg = out, next.out
		}
		select {
		case msg, ok := <-inCh:
			if !ok {
				p.stop()
				return
			}
			p.take(msg)
		case outCh <- outMsg:
			p.sent(next)
		case <-p.wakeRun:
		case <-ctx.Done():
			p.stop()
			return
		}
	}
}

// nextReadyLocked returns the next row to send, with its message made,
// skipping the rows of broken or closed batches; nil if there is none.
func (p *lanePipeline) nextReadyLocked() *relayRow {
	for len(p.ready) > 0 {
		r := p.ready[0]
		if r.batch.broken || r.batch.closed {
			p.ready = p.ready[1:]
			p.resolveLocked(r, rowSkipped)
			continue
		}
		if r.known {
			p.ready = p.ready[1:]
			p.resolveLocked(r, rowPublished)
			continue
		}
		if r.out == nil {
			var ctx context.Context
			ctx, r.cancel = context.WithTimeout(p.ctx, p.deadline)
			// The copy shares the metadata map: the subscriber's message
			// was acknowledged in take, and nothing reads it after that.
			r.out = message.NewMessage(r.src.UUID, r.src.Payload)
			r.out.Metadata = r.src.Metadata
			r.out.SetContext(context.WithValue(ctx, relayRowKey{}, r))
		}
		return r
	}
	return nil
}

// take accepts a row the subscriber handed out and acknowledges it to the
// subscriber.
func (p *lanePipeline) take(msg *message.Message) {
	p.mu.Lock()
	b := p.batch
	r := &relayRow{src: msg, key: msg.Metadata.Get(MetadataAggregateID), batch: b, row: b.indexOf(msg, len(b.taken))}
	if r.row >= 0 && p.confirmed[b.rows[r.row].Offset] {
		r.known = true
	}
	b.taken = append(b.taken, r)
	switch {
	case b.broken || b.closed:
		r.state = rowSkipped
	default:
		p.pending++
		b.open++
		if t := p.tails[r.key]; r.key != "" && t != nil {
			t.next = r
		} else {
			p.ready = append(p.ready, r)
		}
		if r.key != "" {
			p.tails[r.key] = r
		}
	}
	p.mu.Unlock()
	msg.Ack()
}

// sent records that r went to the router.
func (p *lanePipeline) sent(r *relayRow) {
	p.mu.Lock()
	p.ready = p.ready[1:]
	if r.state == rowWaiting { // the router may have resolved it already
		r.state = rowSent
	}
	p.mu.Unlock()
}

// relayRowKey is the context key of a row's message, for middleware.
type relayRowKey struct{}

// middleware is the outermost handler middleware of the lane's forwarder:
// it resolves the row of each message when the handler returns (the router
// then acks or nacks the message, which nobody waits for).
func (p *lanePipeline) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		r, _ := msg.Context().Value(relayRowKey{}).(*relayRow)
		if r == nil {
			return h(msg)
		}
		growStack(msg.Payload)
		resolved := false
		defer func() {
			if !resolved { // the handler panicked: the router recovers and nacks
				p.resolve(r, rowFailed)
			}
		}()
		out, err := h(msg)
		resolved = true
		if err != nil {
			p.resolve(r, rowFailed)
		} else {
			p.resolve(r, rowPublished)
		}
		return out, err
	}
}

// resolve records the outcome of a row sent to the router.
func (p *lanePipeline) resolve(r *relayRow, state rowState) {
	p.mu.Lock()
	p.resolveLocked(r, state)
	p.mu.Unlock()
	r.cancel()
	p.wake()
}

// wake signals the run loop and settle that rows were resolved.
func (p *lanePipeline) wake() {
	for _, ch := range []chan struct{}{p.wakeRun, p.wakeSettle} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// resolveLocked records a row's outcome and releases the aggregate's next
// row: to be sent, or skipped when its batch is broken or closed (which it
// is when this row failed and the next one is of the same batch).
func (p *lanePipeline) resolveLocked(r *relayRow, state rowState) {
	for r != nil {
		if r.state == rowWaiting && r.cancel != nil {
			r.cancel() // made, never sent
		}
		r.state = state
		p.pending--
		r.batch.open--
		if state == rowFailed {
			r.batch.broken = true
		}
		n := r.next
		if n == nil {
			if p.tails[r.key] == r {
				delete(p.tails, r.key)
			}
			return
		}
		if !n.batch.broken && !n.batch.closed {
			p.ready = append(p.ready, n)
			return
		}
		r, state = n, rowSkipped
	}
}

// stop ends the pipeline: rows not sent yet are skipped.
func (p *lanePipeline) stop() {
	p.mu.Lock()
	p.batch.closed = true
	for len(p.ready) > 0 {
		r := p.ready[0]
		p.ready = p.ready[1:]
		p.resolveLocked(r, rowSkipped)
	}
	p.mu.Unlock()
	p.wake()
}

// beginBatch starts a batch; the subscriber calls it (through the lane's
// SchemaAdapter) before each query. Rows of an earlier batch that are
// still unresolved (the subscriber ended that batch without settling it)
// finish, but the ones not sent yet are skipped.
func (p *lanePipeline) beginBatch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batch.closed = true
	p.batch = newLaneBatch()
}

func newLaneBatch() *laneBatch { return &laneBatch{} }

// readRow records a row of the batch, before the subscriber hands it out.
func (p *lanePipeline) readRow(row wsql.Row, transactionID int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batch.rows = append(p.batch.rows, batchRow{row, transactionID})
}

// settle waits until every row of the batch is resolved, and returns the
// last row of the longest prefix of the batch that the broker confirmed,
// up to last (the last row the subscriber saw acknowledged). It returns
// false when no row of the prefix was confirmed, or when the lane stops
// first.
func (p *lanePipeline) settle(last wsql.Row) (batchRow, bool) {
	p.mu.Lock()
	b, ctx := p.batch, p.ctx
	for b.open > 0 {
		p.mu.Unlock()
		select {
		case <-p.wakeSettle:
		case <-ctx.Done():
			p.abandon(b)
			return batchRow{}, false
		case <-p.closing:
			p.abandon(b)
			return batchRow{}, false
		}
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	b.closed = true
	var end *relayRow
	prefix := true
	clear(p.confirmed)
	for _, r := range b.taken {
		if prefix && r.state == rowPublished {
			end = r
			prefix = r.src != last.Msg
			continue
		}
		prefix = false
		if r.row >= 0 && r.state == rowPublished {
			p.confirmed[b.rows[r.row].Offset] = true
		}
	}
	if end == nil {
		return batchRow{}, false
	}
	if end.row < 0 {
		p.logger.Error("Settling a lane's batch", errors.New("a confirmed row is not among the rows read"), watermill.LogFields{"uuid": end.src.UUID})
		return batchRow{}, false
	}
	return b.rows[end.row], true
}

// abandon closes b when the lane stops before it settled.
func (p *lanePipeline) abandon(b *laneBatch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.closed = true
}

// growStack grows the calling goroutine's stack to hold handlerStackSize
// more bytes, at once and while the stack is still shallow.
//
// Watermill's router runs each message's handler in a goroutine of its
// own, whose stack starts at 8 KiB. The forwarder's handler (its JSON
// decoding of the outbox envelope, under the relay's middleware) needs
// about 32 KiB, so every message's goroutine grew its stack twice, each
// time copying it and adjusting every frame of a deep call chain: about a
// seventh of the relay's CPU with a GoChannel sink (bench profile,
// runtime.newstack). Growing it once here, a few frames deep, costs a
// fraction of that. b only keeps the compiler from dropping the frame.
//
//go:noinline
func growStack(b []byte) byte {
	var frame [handlerStackSize]byte
	if len(b) > len(frame) { // reads frame, so that the compiler keeps it
		return frame[len(b)%len(frame)]
	}
	return 0
}

// handlerStackSize is the stack growStack makes room for.
const handlerStackSize = 16 << 10
