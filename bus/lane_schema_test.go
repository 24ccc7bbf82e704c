package bus

import (
	"context"
	"slices"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// KeysetSchema's SELECT returns exactly the rows, in the order, of
// watermill-sql's own, from any consumer position.
func TestKeysetSchemaSelectsWhatWatermillSelects(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	if _, err := schema.Migrate(ctx, pool, schema.Options{Lanes: 1}); err != nil {
		t.Fatal(err)
	}
	// Rows of several transactions, several rows each.
	for tx := range 5 {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for range 3 {
				if _, err := tx.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, transaction_id) VALUES ('u', '{}', pg_current_xact_id())`); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("tx %d: %v", tx, err)
		}
	}
	type pos struct {
		tx  string
		off int64
	}
	var positions []pos
	rows, err := pool.Query(ctx, `SELECT transaction_id::text, "offset" FROM watermill_eventbus_lane_0 ORDER BY transaction_id, "offset"`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p pos
		if err := rows.Scan(&p.tx, &p.off); err != nil {
			t.Fatal(err)
		}
		positions = append(positions, p)
	}
	positions = append([]pos{{"0", 0}}, positions...) // and from the start

	offsets := wsql.DefaultPostgreSQLOffsetsAdapter{GenerateMessagesOffsetsTableName: func(string) string { return schema.OffsetsTable }}
	topic := schema.LaneTopic(0)
	read := func(adapter wsql.SchemaAdapter) []int64 {
		q := adapter.SelectQuery(topic, "g", offsets)
		var got []int64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, q.Query, q.Args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var off int64
				var txid, uuid string
				var payload, metadata []byte
				if err := rows.Scan(&off, &txid, &uuid, &payload, &metadata); err != nil {
					return err
				}
				got = append(got, off)
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, batch := range []int{2, 100} {
		for _, p := range positions {
			if _, err := pool.Exec(ctx, `INSERT INTO eventbus_offsets (consumer_group, offset_acked, last_processed_transaction_id)
				VALUES ('g', $1, $2::xid8) ON CONFLICT (consumer_group) DO UPDATE
				SET offset_acked = excluded.offset_acked, last_processed_transaction_id = excluded.last_processed_transaction_id`, p.off, p.tx); err != nil {
				t.Fatal(err)
			}
			want := read(wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: batch})
			got := read(KeysetSchema{wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: batch}})
			if !slices.Equal(got, want) {
				t.Fatalf("batch %d from %v: keyset read %v, watermill reads %v", batch, p, got, want)
			}
			if p == positions[0] && len(want) != min(batch, 15) {
				t.Fatalf("from the start: %d rows, want %d", len(want), min(batch, 15))
			}
		}
	}
}
