package servers

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka starts kfake, an in-process Kafka broker, on a free loopback port
// and returns its URL (kafka://127.0.0.1:PORT). Topics are created on first
// use (auto topic creation is on). Its message.max.bytes is MaxMessageSize.
// It stops at the test's cleanup.
func Kafka(tb testing.TB) string {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(MaxMessageSize)}))
	if err != nil {
		tb.Fatalf("servers: kafka (kfake): %v", err)
	}
	tb.Cleanup(c.Close)
	return "kafka://" + c.ListenAddrs()[0]
}
