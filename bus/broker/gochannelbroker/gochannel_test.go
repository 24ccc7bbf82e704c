package gochannelbroker_test

import (
	"testing"

	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		RefusesNothing:    "GoChannel hands any message to its subscribers in process: it refuses none",
	}, func(*testing.T) string { return "gochannel://" })
}
