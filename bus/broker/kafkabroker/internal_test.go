package kafkabroker

import (
	"net/url"
	"slices"
	"testing"

	"github.com/IBM/sarama"
)

func TestParseURL(t *testing.T) {
	u, _ := url.Parse("kafka://u:p@a:1,b,c:3?partitions=2&replication=3&create_topics=false&version=2.1.0&tls=true")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.brokers, []string{"a:1", "b:9092", "c:3"}) {
		t.Errorf("brokers = %v", c.brokers)
	}
	if c.partitions != 2 || c.replication != 3 || c.createTopics || !c.tls || c.version != sarama.V2_1_0_0 || c.user != "u" || c.pass != "p" {
		t.Errorf("parsed %+v", c)
	}
	s := c.subscriberConfig()
	if s.Consumer.Offsets.Initial != sarama.OffsetOldest || !s.Net.SASL.Enable || !s.Net.TLS.Enable {
		t.Errorf("subscriber config: initial offset %d, SASL %v, TLS %v", s.Consumer.Offsets.Initial, s.Net.SASL.Enable, s.Net.TLS.Enable)
	}
	if err := c.publisherConfig().Validate(); err != nil {
		t.Errorf("publisher config: %v", err)
	}
}
