// Package kafkaserver starts kfake, an in-process Kafka, for the kafkabroker
// tests. It lives in the kafkabroker module, not in
// internal/brokertest/servers, so that franz-go's kfake is a requirement of
// that module only.
package kafkaserver

import (
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edupulse/eventbus/internal/brokertest/servers"
)

// Kafka starts kfake, an in-process Kafka broker, on a free loopback port
// and returns its URL (kafka://127.0.0.1:PORT). Topics are created on first
// use (auto topic creation is on). Its message.max.bytes is servers.MaxMessageSize.
// It stops at the test's cleanup.
func Kafka(tb testing.TB) string {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(servers.MaxMessageSize)}))
	if err != nil {
		tb.Fatalf("kafkaserver: %v", err)
	}
	tb.Cleanup(c.Close)
	return "kafka://" + c.ListenAddrs()[0]
}

// RestartableKafka is Kafka on a kfake cluster of the test's own,
// restartable: the cluster persists to a temporary directory and starts
// again on the same port.
func RestartableKafka(tb testing.TB) *servers.Restartable {
	tb.Helper()
	dir := tb.TempDir()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DataDir(dir),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(servers.MaxMessageSize)})}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatalf("kafkaserver: %v", err)
	}
	addr := c.ListenAddrs()[0]
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	return servers.NewRestartable(tb, "kafka://"+addr,
		func() error { c.Close(); return nil },
		func() error {
			c2, err := kfake.NewCluster(append(opts, kfake.Ports(port))...)
			if err != nil {
				return fmt.Errorf("kafka (kfake): %w", err)
			}
			c = c2
			return nil
		})
}
