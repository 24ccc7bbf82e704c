package bus

import (
	"testing"
	"time"
)

// CleanerLockKey is the cleaner's advisory lock, for tests that play the
// cleaner of another process.
const CleanerLockKey = cleanerLockKey

// CleanPass is one cleaner pass, as its test signal reports it: what it
// did, and when it held the cleaner lock.
type CleanPass struct {
	Result          CleanResult
	Locked, Unlocks time.Time
}

// SetCleanBatchSize sets the rows one cleaner batch deletes at most. Call
// it before Run.
func (r *Relay) SetCleanBatchSize(n int) { r.cleaner.batchSize = n }

// InitCleanPassSignal makes the cleaner signal every pass. Call it before
// Run.
func (r *Relay) InitCleanPassSignal(tb testing.TB) { r.cleaner.signals.passDone.Init(tb) }

// InitDeletedBatchSignal makes the cleaner signal every outbox batch. Call
// it before Run.
func (r *Relay) InitDeletedBatchSignal(tb testing.TB) { r.cleaner.signals.deletedBatch.Init(tb) }

// WaitCleanPass waits for the next pass's signal.
func (r *Relay) WaitCleanPass() CleanPass {
	return toCleanPass(r.cleaner.signals.passDone.WaitOrTimeout())
}

// CleanPasses returns the channel of the pass signals.
func (r *Relay) CleanPasses() <-chan cleanPass { return r.cleaner.signals.passDone.C() }

// ToCleanPass exports a signalled pass.
func ToCleanPass(p cleanPass) CleanPass { return toCleanPass(p) }

func toCleanPass(p cleanPass) CleanPass {
	return CleanPass{Result: p.result, Locked: p.locked, Unlocks: p.unlocks}
}

// WaitDeletedBatch waits for the next outbox batch's signal and returns
// the rows it deleted.
func (r *Relay) WaitDeletedBatch() int64 { return r.cleaner.signals.deletedBatch.WaitOrTimeout() }

// RequireNoDeletedBatch fails the test if a batch was signalled and not
// waited for.
func (r *Relay) RequireNoDeletedBatch() { r.cleaner.signals.deletedBatch.RequireEmpty() }

// DeleteAcknowledgedSQL is the cleaner's outbox batch.
const DeleteAcknowledgedSQL = deleteAcknowledgedSQL
