package sqlbroker_test

import (
	"testing"

	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/sqlbroker"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{OrderPerAggregate: true}, func(t *testing.T) string {
		return pgtest.NewDatabase(t) // a database of its own serves as the broker
	})
}
