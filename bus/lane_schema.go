package bus

import (
	"strconv"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
)

// KeysetSchema is watermill-sql v3's DefaultPostgreSQLSchema with its
// SELECT rewritten for the primary key. The relay reads its lanes with it;
// a stock watermill-sql subscriber can use it as its SchemaAdapter too. The stock query finds the rows after
// the consumer's position with
//
//	(transaction_id = $tx AND "offset" > $off) OR transaction_id > $tx
//
// which PostgreSQL plans as a scan of every remaining row plus a sort, for
// every batch: draining n rows costs O(n²) row visits (BENCHMARKS.md). The
// same condition as a row comparison is an index range scan on the primary
// key (transaction_id, "offset"), read in order and stopped after one
// batch. Rows, order, locking and the snapshot condition are unchanged.
type KeysetSchema struct {
	wsql.DefaultPostgreSQLSchema
}

// watermillBatchSizeDefault is DefaultPostgreSQLSchema's batch size when
// its SubscribeBatchSize is zero; KeysetSchema keeps it.
const watermillBatchSizeDefault = 100

// SelectQuery implements watermill-sql's SchemaAdapter.
func (s KeysetSchema) SelectQuery(topic string, consumerGroup string, offsetsAdapter wsql.OffsetsAdapter) wsql.Query {
	next := offsetsAdapter.NextOffsetQuery(topic, consumerGroup)
	batch := s.SubscribeBatchSize
	if batch == 0 {
		batch = watermillBatchSizeDefault
	}
	q := `WITH last_processed AS (` + next.Query + `)
	SELECT "offset", transaction_id, uuid, payload, metadata FROM ` + s.MessagesTable(topic) + `
	WHERE ("transaction_id", "offset") > (
			(SELECT last_processed_transaction_id FROM last_processed),
			(SELECT offset_acked FROM last_processed))
		AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY transaction_id ASC, "offset" ASC
	LIMIT ` + strconv.Itoa(batch)
	return wsql.Query{Query: q, Args: next.Args}
}
