package all_test

import (
	"slices"
	"testing"

	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/all"
)

func TestEverySchemeRegistered(t *testing.T) {
	want := []string{"amqp", "amqps", "gochannel", "kafka", "nats", "postgres", "postgresql", "redis", "rediss"}
	if got := broker.Schemes(); !slices.Equal(got, want) {
		t.Fatalf("schemes = %v, want %v", got, want)
	}
}
