package main

import (
	"fmt"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
)

// keysetSchema is watermill-sql v3's DefaultPostgreSQLSchema with one query
// changed, the diagnostic contender "stock Watermill + keyset SELECT": it
// shows what the fix proposed for bus.Relay's lane subscribers is worth.
//
// The stock SelectQuery reads the rows after the consumer's position with
//
//	(transaction_id = $tx AND "offset" > $off) OR transaction_id > $tx
//
// which PostgreSQL plans as a bitmap scan of every row after the position
// followed by a top-N sort: each batch of 100 reads the whole remaining
// backlog (EXPLAIN: 24 ms and 5,754 buffers for a batch at the start of a
// 50,000-row table, 0.12 ms and 16 buffers with the query below), so
// draining a backlog of n rows costs O(n²/100) row visits. The same
// condition written as a row comparison is an index range on the primary
// key (transaction_id, "offset"), read in order and stopped after the batch.
type keysetSchema struct {
	wsql.DefaultPostgreSQLSchema
}

// SelectQuery implements wsql.SchemaAdapter.
func (s keysetSchema) SelectQuery(topic string, consumerGroup string, offsetsAdapter wsql.OffsetsAdapter) wsql.Query {
	next := offsetsAdapter.NextOffsetQuery(topic, consumerGroup)
	batch := s.SubscribeBatchSize
	if batch == 0 {
		batch = 100
	}
	q := `WITH last_processed AS (` + next.Query + `)
	SELECT "offset", transaction_id, uuid, payload, metadata FROM ` + s.MessagesTable(topic) + `
	WHERE ("transaction_id", "offset") > (
			(SELECT last_processed_transaction_id FROM last_processed),
			(SELECT offset_acked FROM last_processed))
		AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY transaction_id ASC, "offset" ASC
	LIMIT ` + fmt.Sprint(batch)
	return wsql.Query{Query: q, Args: next.Args}
}
