package bus

import (
	"database/sql"
	"strconv"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"

	"github.com/edupulse/eventbus/schema"
)

// laneOffsets is the relay's watermill-sql OffsetsAdapter. Unlike
// watermill-sql's DefaultPostgreSQLOffsetsAdapter, which locks the consumer
// group's offsets row with SELECT … FOR UPDATE for the whole batch, it
// claims the lane with a transaction-scoped advisory lock
// (eventbus_claim_lane). A row lock gives the batch's transaction a
// transaction id, and a running transaction id holds back
// pg_snapshot_xmin(pg_current_snapshot()) for every watermill-sql reader
// of the cluster, so one lane publishing slowly delayed all the others. An
// advisory lock assigns none: the batch's transaction gets one only when it
// writes the new offset, just before it commits. A relay process that does
// not get the lock reads no rows and tries again later, instead of waiting
// on a row lock and failing with a serialization error.
//
// The subscriber calls AckMessageQuery after it handed out a batch's rows
// and before it writes the offset: the offsets adapter waits there for the
// lane's pipeline to settle the batch (every row confirmed by the broker,
// dead-lettered, failed or skipped), and acknowledges the longest prefix of
// the batch that was confirmed, which may end before the row the
// subscriber names.
type laneOffsets struct {
	pipeline *lanePipeline
}

// SchemaInitializingQueries implements wsql.OffsetsAdapter: schema.Migrate
// creates the offsets table.
func (laneOffsets) SchemaInitializingQueries(string) []wsql.Query { return nil }

// NextOffsetQuery implements wsql.OffsetsAdapter.
func (laneOffsets) NextOffsetQuery(_, consumerGroup string) wsql.Query {
	return wsql.Query{
		Query: `SELECT offset_acked, last_processed_transaction_id FROM eventbus_claim_lane($1)`,
		Args:  []any{consumerGroup},
	}
}

// AckMessageQuery implements wsql.OffsetsAdapter. It blocks until the
// batch is settled (see laneOffsets). The offset only moves forward: a
// relay that read a batch another one had already acknowledged (both
// publish it: at least once) cannot move it back.
func (o laneOffsets) AckMessageQuery(_ string, last wsql.Row, consumerGroup string) wsql.Query {
	row, ok := o.pipeline.settle(last)
	if !ok {
		// Nothing of the batch to acknowledge: the subscriber still runs a
		// statement, and then commits a transaction that wrote nothing.
		return wsql.Query{Query: `SELECT 1`}
	}
	return wsql.Query{
		Query: `INSERT INTO ` + schema.OffsetsTable + ` AS o (offset_acked, last_processed_transaction_id, consumer_group)
	VALUES ($1, $2, $3)
	ON CONFLICT (consumer_group) DO UPDATE SET
		offset_acked = excluded.offset_acked,
		last_processed_transaction_id = excluded.last_processed_transaction_id
	WHERE (o.last_processed_transaction_id, o.offset_acked) < (excluded.last_processed_transaction_id, excluded.offset_acked)`,
		Args: []any{row.Offset, row.transactionID, consumerGroup},
	}
}

// ConsumedMessageQuery implements wsql.OffsetsAdapter; there is none.
func (laneOffsets) ConsumedMessageQuery(string, wsql.Row, string, []byte) wsql.Query {
	return wsql.Query{}
}

// BeforeSubscribingQueries implements wsql.OffsetsAdapter: it creates the
// group's zero offsets, so that the lane is read from its start.
func (laneOffsets) BeforeSubscribingQueries(_, consumerGroup string) []wsql.Query {
	return []wsql.Query{{
		Query: `INSERT INTO ` + schema.OffsetsTable + ` (consumer_group, offset_acked, last_processed_transaction_id)
	VALUES ($1, 0, '0') ON CONFLICT DO NOTHING`,
		Args: []any{consumerGroup},
	}}
}

// laneSchema is the relay's watermill-sql SchemaAdapter for one lane:
// KeysetSchema with two changes.
//
// Its batch transaction is READ COMMITTED, so that eventbus_claim_lane's
// query, run after the lock is taken, sees the offsets the previous owner
// committed. Under REPEATABLE READ it would see the transaction's first
// snapshot, taken before the lock: the batch would be read again, and the
// offset write would fail with a serialization error. The batch's rows are
// read by one statement, so its snapshot is consistent either way.
//
// When another relay process holds the lane, its SELECT returns one
// sentinel row (offset -1) instead of nothing, which UnmarshalMessage
// turns into "no message" after telling the lane's waker: the lane then
// waits a poll interval instead of polling a lane that another process is
// draining.
//
// It also tells the lane's pipeline when a batch starts (SelectQuery is
// called before each query) and which rows it read.
type laneSchema struct {
	KeysetSchema
	busy     func()
	pipeline *lanePipeline
}

// busyOffset marks the sentinel row of a lane held by another relay.
const busyOffset = -1

// SubscribeIsolationLevel implements wsql.SchemaAdapter.
func (laneSchema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelReadCommitted }

// SelectQuery implements wsql.SchemaAdapter.
func (s laneSchema) SelectQuery(topic string, consumerGroup string, offsetsAdapter wsql.OffsetsAdapter) wsql.Query {
	s.pipeline.beginBatch()
	q := s.KeysetSchema.SelectQuery(topic, consumerGroup, offsetsAdapter)
	// Advisory locks are re-entrant: this returns true when
	// eventbus_claim_lane took the lock, and false when another process
	// holds it. (If that process let go in between, it takes it, and the
	// lane is simply read again soon.)
	q.Query = `(` + q.Query + `)
	UNION ALL
	SELECT ` + strconv.Itoa(busyOffset) + `::bigint, '0'::xid8, '', NULL::json, NULL::json
	WHERE NOT pg_try_advisory_xact_lock(` + strconv.Itoa(claimLockClass) + `, hashtext($1))`
	return q
}

// UnmarshalMessage implements wsql.SchemaAdapter. The row's transaction id
// goes to the pipeline (for the lane's offset), not to a map in the row's
// ExtraData.
func (s laneSchema) UnmarshalMessage(row wsql.Scanner) (wsql.Row, error) {
	r, transactionID, err := scanLaneRow(row)
	if err != nil {
		return wsql.Row{}, err
	}
	if r.Offset == busyOffset {
		s.busy()
		return wsql.Row{}, sql.ErrNoRows // the subscriber reads this as "no message"
	}
	s.pipeline.readRow(r, transactionID)
	return r, nil
}

// claimLockClass is the first key of the advisory lock eventbus_claim_lane
// takes; the second is hashtext(consumer group).
const claimLockClass = 1701147252
