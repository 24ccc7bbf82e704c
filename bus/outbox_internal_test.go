package bus

import (
	"strings"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edupulse/eventbus/schema"
)

// The outbox writes rows with the statement watermill-sql v3 builds, so
// the rows stay in its layout; only the transaction_id value is the order
// key instead of the transaction's own id.
func TestInsertStatementIsWatermills(t *testing.T) {
	var c insertCache
	for _, rows := range []int{1, 2, 10, maxCachedInsertRows + 1} {
		for _, lane := range []int{0, 3} {
			msgs := make(message.Messages, rows)
			for i := range msgs {
				msgs[i] = message.NewMessage("id", []byte("{}"))
			}
			want, err := wsql.DefaultPostgreSQLSchema{}.InsertQuery(schema.LaneTopic(lane), msgs)
			if err != nil {
				t.Fatal(err)
			}
			want.Query = strings.ReplaceAll(want.Query, "pg_current_xact_id()", orderKeyValue)
			if got := c.get(lane, rows); got != want.Query {
				t.Fatalf("lane %d, %d rows:\n got %s\nwant %s", lane, rows, got, want.Query)
			}
		}
	}
}

func TestLaneOfTopic(t *testing.T) {
	for _, lane := range []int{0, 7, 255} {
		if got, err := laneOfTopic(schema.LaneTopic(lane)); err != nil || got != lane {
			t.Errorf("laneOfTopic(%q) = %d, %v", schema.LaneTopic(lane), got, err)
		}
	}
	for _, topic := range []string{"", "eventbus_lane_", "eventbus_lane_x", "other_3", "eventbus_lane_-1"} {
		if _, err := laneOfTopic(topic); err == nil {
			t.Errorf("laneOfTopic(%q) succeeded", topic)
		}
	}
}
