package bus

import (
	"fmt"
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
			plain := strings.ReplaceAll(want.Query, "pg_current_xact_id()", orderKeyValue)
			if got := c.get(lane, rows, false); got != plain {
				t.Fatalf("lane %d, %d rows:\n got %s\nwant %s", lane, rows, got, plain)
			}
			// The first INSERT of a Publish computes the key in its first row.
			keyed := strings.Replace(want.Query, "pg_current_xact_id()", fmt.Sprintf(orderKeyCall, 3*rows+1, 3*rows+2), 1)
			keyed = strings.ReplaceAll(keyed, "pg_current_xact_id()", orderKeyValue)
			if got := c.get(lane, rows, true); got != keyed {
				t.Fatalf("lane %d, %d rows, computing the key:\n got %s\nwant %s", lane, rows, got, keyed)
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
