package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/internal/testsignal"
	"github.com/edupulse/eventbus/schema"
)

// The outbox cleaner. Every CleanInterval a relay runs a pass. A pass
// deletes, lane by lane, the outbox rows that every registered relay group
// has acknowledged and that are older than Retention; then the aggregate
// heads no producer can conflict with any more, and the publish-attempt
// counts whose last failure is older than Retention.
//
// Short transactions. A transaction that deletes takes a transaction id,
// and until it commits it holds back what every watermill-sql reader of the
// cluster may read: every relay, in every lane, waits for it. So every
// delete is one statement, its own transaction, of a bounded batch: the
// first of a lane removes cleanBatchSizeDefault rows at most, and the size
// of the next ones is scaled so that each takes about cleanBatchTarget.
// Each statement runs under cleanStatementTimeout, and between batches the
// cleaner pauses as long as the batch took (at most cleanPauseMax), leaving
// the database at least half of its time. A lane is done when a batch
// deletes fewer rows than asked.
//
// One cleaner at a time. A pass runs only if it gets a session-level
// advisory lock (cleanerLockKey) on the connection it holds for the whole
// pass; a relay whose cleaner finds the lock taken skips its pass. Unlike
// a transaction-scoped lock, which would have to be taken again for every
// batch and would let two processes' passes interleave batch by batch, the
// session lock keeps whole passes apart while no transaction stays open
// between batches: an advisory lock assigns no transaction id and holds no
// snapshot. If the process dies, the lock goes with its connection; if
// releasing it fails, the connection is closed instead of going back to the
// pool.
const (
	// cleanBatchSizeDefault is the number of rows the first delete of a
	// lane removes at most. Later batches are scaled so that each takes
	// about cleanBatchTarget, within cleanBatchSizeMin and
	// cleanBatchSizeMax.
	cleanBatchSizeDefault = 1000
	cleanBatchSizeMin     = 50
	cleanBatchSizeMax     = 10000
	cleanBatchTarget      = 5 * time.Millisecond
	// cleanStatementTimeout bounds one batch (statement_timeout and the
	// context's deadline).
	cleanStatementTimeout = 30 * time.Second
	// cleanPauseMax bounds the pause between batches.
	cleanPauseMax = time.Second
	// cleanerLockKey is the session-level advisory lock of the database's
	// running cleaner pass ("evbclean" in ASCII; its bigint key space is
	// apart from the lane claims' two-integer keys).
	cleanerLockKey = 0x657662636c65616e
	// cleanUnlockTimeout bounds releasing the lock after a pass.
	cleanUnlockTimeout = 10 * time.Second
)

// deleteAcknowledgedSQL is one batch of the cleaner in one lane table
// (%[1]s): it examines the first $4 rows after the position ($2, $3), in
// the relay's order, and deletes those that every registered relay group
// has acknowledged in the lane ($1, as text) and that are older than $5. A
// registered group without an offsets row in the lane has acknowledged
// nothing there; without any registered group nothing is deleted. It
// returns the rows deleted, the rows examined and the position of the last
// one examined, where the next batch starts.
//
// The query names the lane table, not eventbus_outbox with a lane
// condition, and bounds the batch by the position alone: whatever the
// table's statistics (none right after a bulk load), the planner then reads
// the primary key in order and stops after $4 rows, where an estimate of
// a few rows made it sort the whole lane for every batch.
const deleteAcknowledgedSQL = `WITH horizon AS (
	-- The position the group furthest behind in the lane acknowledged;
	-- NULL when some group has no offsets row there.
	SELECT f.last_processed_transaction_id, f.offset_acked
	FROM eventbus_relay_groups g
	LEFT JOIN eventbus_offsets f ON f.consumer_group = g.consumer_group || '/' || $1::text
	ORDER BY f.consumer_group IS NULL DESC, f.last_processed_transaction_id, f.offset_acked NULLS FIRST
	LIMIT 1
), batch AS MATERIALIZED (
	SELECT transaction_id, "offset", created_at FROM %[1]s
	WHERE (transaction_id, "offset") > ($2::bigint::text::xid8, $3::bigint)
	ORDER BY transaction_id, "offset"
	LIMIT $4::integer
), deleted AS (
	DELETE FROM %[1]s o
	USING batch b, horizon h
	WHERE o.transaction_id = b.transaction_id AND o."offset" = b."offset"
	  AND (b.transaction_id, b."offset") <= (h.last_processed_transaction_id, h.offset_acked)
	  AND b.created_at < now() - $5::interval
	RETURNING 1
), last AS (
	SELECT transaction_id, "offset" FROM batch
	ORDER BY transaction_id DESC, "offset" DESC
	LIMIT 1
)
SELECT
	(SELECT count(*) FROM deleted),
	(SELECT count(*) FROM batch),
	coalesce((SELECT transaction_id::text::bigint FROM last), 0),
	coalesce((SELECT "offset" FROM last), 0)`

// acknowledgedBatch is what one run of deleteAcknowledgedSQL did.
type acknowledgedBatch struct {
	deleted, examined          int64
	lastTransactionID, lastOff int64
}

// deleteAcknowledged runs one batch of deleteAcknowledgedSQL.
func deleteAcknowledged(ctx context.Context, conn *pgx.Conn, lane int, after acknowledgedBatch, size int32, olderThan pgtype.Interval) (acknowledgedBatch, error) {
	var b acknowledgedBatch
	table := pgx.Identifier{"watermill_" + schema.LaneTopic(lane)}.Sanitize()
	err := conn.QueryRow(ctx, fmt.Sprintf(deleteAcknowledgedSQL, table), strconv.Itoa(lane),
		after.lastTransactionID, after.lastOff, size, olderThan).Scan(&b.deleted, &b.examined, &b.lastTransactionID, &b.lastOff)
	return b, err
}

// CleanResult tells what one cleaner pass did.
type CleanResult struct {
	// Skipped tells that the cleaner of another relay process was running
	// a pass: this one deleted nothing.
	Skipped bool
	// Outbox counts the outbox rows deleted.
	Outbox int64
	// Heads counts the aggregate heads deleted (eventbus_heads).
	Heads int64
	// Attempts counts the publish-attempt counts deleted
	// (eventbus_attempts).
	Attempts int64
}

// cleanerState holds what tests change in a relay's cleaner: its batch
// size and its test signals.
type cleanerState struct {
	batchSize int // zero means cleanBatchSizeDefault
	signals   cleanerSignals
}

// cleanerSignals fire at the cleaner's meaningful points, in tests only.
type cleanerSignals struct {
	// deletedBatch fires after each outbox batch, with the rows deleted.
	deletedBatch testsignal.TestSignal[int64]
	// passDone fires after each pass, skipped or not.
	passDone testsignal.TestSignal[cleanPass]
}

// cleanPass is one pass, as signalled to tests: what it did, and when it
// held the cleaner lock (taken after the lock was acquired and before it
// was released).
type cleanPass struct {
	result          CleanResult
	locked, unlocks time.Time
}

// clean runs a cleaner pass every CleanInterval until ctx ends. The pass
// cleans every lane of the database; lanes, the relay's own, is unused.
func (r *Relay) clean(ctx context.Context, pool *pgxpool.Pool) {
	t := time.NewTicker(r.cfg.CleanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.cleanOnce(ctx, pool); err != nil && ctx.Err() == nil {
			r.logger.Error("Outbox cleaner failed", err, nil)
		}
	}
}

// CleanOnce runs one cleaner pass now, over the relay's Pool, and tells
// what it deleted: in every lane, the outbox rows older than Retention that
// every registered relay group has acknowledged; the aggregate heads older
// than every running transaction; and the publish-attempt counts whose last
// failure is older than Retention. It also records that the relay's group
// is still running. If the cleaner of another relay process is running a
// pass, CleanOnce deletes nothing and reports Skipped. With a negative
// Retention (the cleaner disabled) it returns an error.
func (r *Relay) CleanOnce(ctx context.Context) (CleanResult, error) {
	return r.cleanOnce(ctx, r.cfg.Pool)
}

func (r *Relay) cleanOnce(ctx context.Context, pool *pgxpool.Pool) (CleanResult, error) {
	if r.cfg.Retention < 0 {
		return CleanResult{}, errors.New("bus: clean: negative Retention: the cleaner is disabled")
	}
	if err := r.q.RegisterRelayGroup(ctx, pool, r.cfg.ConsumerGroup); err != nil {
		return CleanResult{}, fmt.Errorf("bus: clean: refresh relay group %q: %w", r.cfg.ConsumerGroup, err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return CleanResult{}, fmt.Errorf("bus: clean: %w", err)
	}
	lock, err := r.q.TryCleanerLock(ctx, conn, cleanerLockKey)
	if err != nil || !lock.Locked {
		conn.Release()
		if err != nil {
			return CleanResult{}, fmt.Errorf("bus: clean: take the cleaner lock: %w", err)
		}
		res := CleanResult{Skipped: true}
		r.cleaner.signals.passDone.Signal(cleanPass{result: res})
		return res, nil
	}
	pass := cleanPass{locked: time.Now()}
	res, err := r.cleanLocked(ctx, conn.Conn())
	pass.result, pass.unlocks = res, time.Now()
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanUnlockTimeout)
	defer cancel()
	unlock, uerr := r.q.CleanerUnlock(uctx, conn, db.CleanerUnlockParams{Key: cleanerLockKey, StatementTimeout: lock.StatementTimeout})
	if err != nil || uerr != nil || !unlock.Unlocked {
		// The connection may still hold the lock or the cleaner's
		// statement_timeout, or be broken: close it rather than give it
		// back to the pool.
		_ = conn.Hijack().Close(uctx)
	} else {
		conn.Release()
	}
	if err == nil && uerr != nil {
		err = fmt.Errorf("bus: clean: release the cleaner lock: %w", uerr)
	}
	r.cleaner.signals.passDone.Signal(pass)
	if res.Outbox+res.Heads+res.Attempts > 0 {
		r.logger.Debug("Outbox cleaned", watermill.LogFields{"outbox": res.Outbox, "heads": res.Heads, "attempts": res.Attempts})
	}
	return res, err
}

// cleanLocked runs a pass on conn, which holds the cleaner lock. Every
// statement is a transaction of its own (conn is in no transaction block),
// under cleanStatementTimeout.
func (r *Relay) cleanLocked(ctx context.Context, conn *pgx.Conn) (CleanResult, error) {
	var res CleanResult
	if err := r.q.SetStatementTimeout(ctx, conn, strconv.FormatInt(cleanStatementTimeout.Milliseconds(), 10)); err != nil {
		return res, fmt.Errorf("bus: clean: %w", err)
	}
	lanes, err := schema.Lanes(ctx, conn)
	if err != nil {
		return res, fmt.Errorf("bus: clean: %w", err)
	}
	olderThan := pgtype.Interval{Microseconds: r.cfg.Retention.Microseconds(), Valid: true}
	for lane := range lanes {
		var after acknowledgedBatch
		n, err := r.deleteInBatches(ctx, func(ctx context.Context, size int32) (int64, error) {
			b, err := deleteAcknowledged(ctx, conn, lane, after, size, olderThan)
			if err != nil {
				return 0, err
			}
			after = b
			r.cleaner.signals.deletedBatch.Signal(b.deleted)
			// A short batch reached the last row every group acknowledged
			// or rows younger than Retention: the lane is done.
			return b.deleted, nil
		})
		res.Outbox += n
		if err != nil {
			return res, fmt.Errorf("bus: clean lane %d: %w", lane, err)
		}
	}
	res.Heads, err = r.deleteInBatches(ctx, func(ctx context.Context, size int32) (int64, error) {
		return r.q.DeleteSettledHeads(ctx, conn, size)
	})
	if err != nil {
		return res, fmt.Errorf("bus: clean aggregate heads: %w", err)
	}
	res.Attempts, err = r.deleteInBatches(ctx, func(ctx context.Context, size int32) (int64, error) {
		return r.q.DeleteStaleAttempts(ctx, conn, db.DeleteStaleAttemptsParams{OlderThan: olderThan, MaxRows: size})
	})
	if err != nil {
		return res, fmt.Errorf("bus: clean publish attempts: %w", err)
	}
	return res, nil
}

// deleteInBatches calls del with a batch size until it deletes fewer rows
// than that, pausing between batches, and returns the rows deleted. Each
// call gets cleanStatementTimeout.
func (r *Relay) deleteInBatches(ctx context.Context, del func(ctx context.Context, size int32) (int64, error)) (int64, error) {
	size := int32(r.cleanBatchSize())
	var total int64
	for {
		start := time.Now()
		bctx, cancel := context.WithTimeout(ctx, cleanStatementTimeout)
		n, err := del(bctx, size)
		cancel()
		took := time.Since(start)
		if err != nil {
			return total, err
		}
		total += n
		if n < int64(size) {
			return total, nil
		}
		size = r.nextBatchSize(size, took)
		if !pause(ctx, took) {
			return total, ctx.Err()
		}
	}
}

func (r *Relay) cleanBatchSize() int {
	if r.cleaner.batchSize > 0 {
		return r.cleaner.batchSize
	}
	return cleanBatchSizeDefault
}

// nextBatchSize scales the outbox batch size towards cleanBatchTarget,
// by at most a factor of two per batch, within cleanBatchSizeMin and
// cleanBatchSizeMax. A batch size set by a test stays fixed.
func (r *Relay) nextBatchSize(size int32, took time.Duration) int32 {
	if r.cleaner.batchSize > 0 {
		return size
	}
	f := min(max(float64(cleanBatchTarget)/float64(max(took, time.Microsecond)), 0.5), 2)
	return int32(min(max(float64(size)*f, cleanBatchSizeMin), cleanBatchSizeMax))
}

// pause waits as long as the last batch took (at most cleanPauseMax), and
// reports false if ctx ended first.
func pause(ctx context.Context, took time.Duration) bool {
	t := time.NewTimer(min(took, cleanPauseMax))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
