// Package kafkabroker registers the "kafka" broker scheme: Apache Kafka,
// through Sarama, with watermill-kafka/v3's marshaler and default configs;
// the publisher and the consumer-group subscriber (subscriber.go) are the
// adapter's own.
//
// URL: kafka://[user:password@]host:9092[,host2:9092...][?partitions=4&replication=1&create_topics=true&version=2.3.0&tls=false]
//
// Query parameters:
//   - partitions, replication: for the topics this package creates
//     (defaults 4 and 1).
//   - create_topics: create a topic on first use (default true); with
//     false, topics must exist or the brokers must auto-create them.
//   - version: the Kafka protocol version Sarama speaks (default 2.3.0:
//     brokers from 2.3 on accept it; the in-process kfake used by the tests
//     needs 1.0.0 to 2.3.0).
//   - tls: connect with TLS (default false).
//
// A user and password in the URL authenticate with SASL/PLAIN (use TLS).
//
// Layout: one Kafka topic per topic. The message key is the aggregate id
// (metadata aggregate_id), so all the events of an aggregate land in one
// partition. A consumer group is a Kafka consumer group of the same name; a
// new group starts from the oldest retained message. Several subscribers of
// a group split the partitions between them.
//
// Restarts and outages: Sarama reconnects on demand, for as long as it
// takes: the producer and the consumer groups retry with pauses of 250 ms
// (metadata, produce) to 2 s (consume, rebalance), at most
// broker.Options.ReconnectMax (2 s by default; the reconnect_max URL
// parameter sets it), and a subscription whose consumer group failed to
// consume calls it again 1 s (at most ReconnectMax) later. A subscription
// keeps its consumer group, and so its member id, for its whole life
// (watermill-kafka's subscriber made a new one, whose old member the broker
// kept across a restart until its session timeout: rebalances waited for
// it, and the whole group stalled up to 10 s). Sarama's producer
// opens a circuit breaker for a fixed 10 s after three failures to find a
// topic's leader, as while the broker is down, and fails every publish
// meanwhile ("circuit breaker is open"), however soon the broker is back:
// the publisher then replaces the producer with a new one.
//
// Publish returns once the in-sync replicas stored every message
// (acks=all). It uses Sarama's asynchronous producer, in watermill-kafka's
// message layout: concurrent publishes (the relay keeps many events in
// flight) are batched into shared produce requests, and the messages of one
// call are sent together, except that a message waits for the ack of an
// earlier message of the call with the same key (aggregate id), so that a
// retried request cannot reorder them.
//
// Order: a partition keeps the publish order and is consumed by one member
// of a group at a time, one message after the other, so a group sees every
// aggregate's events in publish order however many subscribers it has
// (events of different aggregates, on different partitions, interleave).
// A nacked message is redelivered before the partition moves on.
//
// Permanent errors (bus.Permanent: the relay dead-letters the event instead
// of retrying it for as long as it fails): MESSAGE_TOO_LARGE (a record
// above the topic's max.message.bytes, or above the broker's
// message.max.bytes), RECORD_LIST_TOO_LARGE, INVALID_TOPIC_EXCEPTION (a
// name Kafka refuses, or one colliding with another topic's that differs
// only in '.' and '_'), INVALID_RECORD, TOPIC_AUTHORIZATION_FAILED (the
// user may not write to the topic), POLICY_VIOLATION (when creating the
// topic), and Sarama's own refusals before sending (a message larger than
// its Producer.MaxMessageBytes, 1 MiB). Everything else, unreachable
// brokers, leader elections, timeouts, too few in-sync replicas, is
// retried for as long as it lasts.
package kafkabroker

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eapache/go-resiliency/breaker"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// Scheme is the URL scheme this package registers.
const Scheme = "kafka"

// Defaults of the URL's query parameters.
const (
	PartitionsDefault  = 4
	ReplicationDefault = 1
	VersionDefault     = "2.3.0"
	defaultPort        = "9092"
)

func init() { broker.Register(Scheme, Open) }

type config struct {
	brokers      []string
	partitions   int32
	replication  int16
	createTopics bool
	version      sarama.KafkaVersion
	tls          bool
	user, pass   string
	reconnectMax time.Duration // broker.Options.ReconnectMax
}

var knownParams = []string{"partitions", "replication", "create_topics", "version", "tls"}

func parseURL(u *url.URL) (config, error) {
	c := config{partitions: PartitionsDefault, replication: ReplicationDefault, createTopics: true}
	q := u.Query()
	for k := range q {
		if !slices.Contains(knownParams, k) {
			return c, fmt.Errorf("kafkabroker: unknown query parameter %q (known: %s)", k, strings.Join(knownParams, ", "))
		}
	}
	if u.Host == "" {
		return c, errors.New("kafkabroker: missing host (kafka://host:9092)")
	}
	for h := range strings.SplitSeq(u.Host, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, defaultPort)
		}
		c.brokers = append(c.brokers, h)
	}
	if v := q.Get("partitions"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("kafkabroker: partitions=%q: want a positive integer", v)
		}
		c.partitions = int32(n)
	}
	if v := q.Get("replication"); v != "" {
		n, err := strconv.ParseInt(v, 10, 16)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("kafkabroker: replication=%q: want a positive integer", v)
		}
		c.replication = int16(n)
	}
	var err error
	if c.createTopics, err = boolParam(q, "create_topics", true); err != nil {
		return c, err
	}
	if c.tls, err = boolParam(q, "tls", false); err != nil {
		return c, err
	}
	if c.version, err = sarama.ParseKafkaVersion(cmp.Or(q.Get("version"), VersionDefault)); err != nil {
		return c, fmt.Errorf("kafkabroker: version=%q: %w", q.Get("version"), err)
	}
	if u.User != nil {
		c.user = u.User.Username()
		c.pass, _ = u.User.Password()
	}
	return c, nil
}

func boolParam(q url.Values, key string, def bool) (bool, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("kafkabroker: %s=%q: want true or false", key, v)
	}
	return b, nil
}

// sarama returns a Sarama configuration with the URL's connection settings.
func (c config) sarama(base *sarama.Config) *sarama.Config {
	s := base
	s.ClientID = "eventbus"
	s.Version = c.version
	s.Metadata.Retry.Backoff = 250 * time.Millisecond
	s.Net.DialTimeout = 10 * time.Second
	if c.tls {
		s.Net.TLS.Enable = true
		s.Net.TLS.Config = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.user != "" {
		s.Net.SASL.Enable = true
		s.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		s.Net.SASL.User = c.user
		s.Net.SASL.Password = c.pass
	}
	return s
}

func (c config) publisherConfig() *sarama.Config {
	s := c.sarama(kafka.DefaultSaramaSyncPublisherConfig())
	s.Producer.RequiredAcks = sarama.WaitForAll
	s.Producer.Retry.Backoff = 250 * time.Millisecond
	return s
}

func (c config) subscriberConfig() *sarama.Config {
	s := c.sarama(kafka.DefaultSaramaSubscriberConfig())
	s.Consumer.Offsets.Initial = sarama.OffsetOldest
	s.Consumer.Group.Heartbeat.Interval = time.Second
	if c.reconnectMax > 0 {
		s.Consumer.Retry.Backoff = min(s.Consumer.Retry.Backoff, c.reconnectMax)
		s.Consumer.Group.Rebalance.Retry.Backoff = min(s.Consumer.Group.Rebalance.Retry.Backoff, c.reconnectMax)
	}
	return s
}

// reconnectRetrySleep is the pause before a subscription calls Consume
// again after it failed: 1 s (watermill-kafka's default), at most
// ReconnectMax.
func (c config) reconnectRetrySleep() time.Duration {
	if c.reconnectMax > 0 {
		return min(time.Second, c.reconnectMax)
	}
	return time.Second
}

// marshaler keys messages by aggregate id.
var marshaler = kafka.NewWithPartitioningMarshaler(func(_ string, msg *message.Message) (string, error) {
	return msg.Metadata.Get(bus.MetadataAggregateID), nil
})

type kafkaBroker struct {
	cfg    config
	u      *url.URL
	logger watermill.LoggerAdapter
	topics *topics

	// pubMu is held for reading by publishes and for writing to replace
	// pub (see renewPublisher): a Sarama producer must not be used once
	// closed.
	pubMu  sync.RWMutex
	pub    *asyncPublisher // nil after a failed renewal, until the next publish makes one
	closed bool

	subs broker.Subscribers
}

// Open is the kafka driver.
func Open(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.reconnectMax = opts.ReconnectMax
	logger := watermill.NewSlogLogger(opts.Logger)
	pub, err := cfg.newPublisher()
	if err != nil {
		return nil, err
	}
	return &kafkaBroker{cfg: cfg, u: u, logger: logger, pub: pub, topics: &topics{cfg: cfg}}, nil
}

func (c config) newPublisher() (*asyncPublisher, error) {
	pub, err := newAsyncPublisher(c)
	if err != nil {
		return nil, fmt.Errorf("kafkabroker: publisher: %w", err)
	}
	return pub, nil
}

// publish publishes with the current producer, making one if the last
// renewal failed, and renews it when its circuit breaker is open.
func (b *kafkaBroker) publish(topic string, msgs []*message.Message) error {
	b.pubMu.RLock()
	pub, closed := b.pub, b.closed
	var err error
	switch {
	case closed:
		err = errors.New("kafkabroker: publisher closed")
	case pub != nil:
		err = pub.Publish(topic, msgs...)
	}
	b.pubMu.RUnlock()
	if pub == nil && !closed {
		if err = b.renewPublisher(nil); err == nil {
			return b.publish(topic, msgs)
		}
	}
	if errors.Is(err, breaker.ErrBreakerOpen) {
		if rerr := b.renewPublisher(pub); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// renewPublisher replaces the producer old with a new one, unless another
// publish did already. Sarama's producer opens a circuit breaker for 10
// seconds after three failures to find a topic's partitions or leader, as
// while the broker is down, and fails every publish to that topic meanwhile
// ("circuit breaker is open"), however soon the broker is back: a new
// producer starts with closed breakers.
func (b *kafkaBroker) renewPublisher(old *asyncPublisher) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if b.closed || b.pub != old {
		return nil
	}
	if old != nil {
		if err := old.Close(); err != nil {
			b.logger.Error("Cannot close the producer being renewed", err, nil)
		}
		b.pub = nil
	}
	pub, err := b.cfg.newPublisher()
	if err != nil {
		return err
	}
	b.pub = pub
	return nil
}

func (b *kafkaBroker) Publisher() message.Publisher {
	return broker.Publisher{Publisher: publisher{b}, Name: "kafkabroker", URL: b.u, Permanent: permanent}
}

func (b *kafkaBroker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("kafkabroker: empty consumer group")
	}
	sub, err := broker.Track(&b.subs, func() (*groupSubscriber, error) { return newGroupSubscriber(b, group), nil })
	if err != nil {
		return nil, fmt.Errorf("kafkabroker: subscriber %s: %w", group, err)
	}
	return subscriber{sub, b, group}, nil
}

func (b *kafkaBroker) Close() error {
	already, err := b.subs.Close(nil)
	if already {
		return nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("kafkabroker: close subscribers: %w", err))
	}
	b.pubMu.Lock()
	b.closed = true
	if b.pub != nil {
		if err := b.pub.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kafkabroker: close publisher: %w", err))
		}
	}
	b.pubMu.Unlock()
	if err := b.topics.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// publisher creates the topic, then publishes with the async producer.
type publisher struct{ b *kafkaBroker }

func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.b.topics.ensure(topic); err != nil {
		return err
	}
	return p.b.publish(topic, msgs)
}

func (publisher) Close() error { return nil } // the broker owns it

// permanentErrors are the Kafka errors of a produce request, or of the
// topic's creation, that sending the same messages again would get again.
var permanentErrors = []error{
	sarama.ErrMessageSizeTooLarge,      // a record above the topic's max.message.bytes
	sarama.ErrMessageSetSizeTooLarge,   // a batch above the broker's limit
	sarama.ErrInvalidTopic,             // a topic name Kafka does not accept
	sarama.ErrInvalidRecord,            // a record the broker validates and rejects
	sarama.ErrTopicAuthorizationFailed, // the credentials may not write to the topic
	sarama.ErrPolicyViolation,          // the topic's creation breaks a broker policy
}

// permanent reports whether a publish error is one Kafka returns for these
// messages however often they are sent (see the package doc).
func permanent(err error) bool {
	for _, p := range permanentErrors {
		if errors.Is(err, p) {
			return true
		}
	}
	// Sarama's own refusals of a message before it is sent: larger than
	// Producer.MaxMessageBytes, or headers for a protocol without them.
	var cfgErr sarama.ConfigurationError
	return errors.As(err, &cfgErr)
}

// errPublisherClosed is returned by Publish once the broker is closed.
var errPublisherClosed = errors.New("publisher closed")

// asyncPublisher publishes through a Sarama AsyncProducer, waiting for
// each message's ack.
type asyncPublisher struct {
	producer sarama.AsyncProducer
	done     chan struct{} // closed when dispatch returns

	mu     sync.RWMutex // held for reading while sending to the producer
	closed bool
}

func newAsyncPublisher(cfg config) (*asyncPublisher, error) {
	prod, err := sarama.NewAsyncProducer(cfg.brokers, cfg.publisherConfig())
	if err != nil {
		return nil, err
	}
	p := &asyncPublisher{producer: prod, done: make(chan struct{})}
	go p.dispatch()
	return p, nil
}

// dispatch hands every message's outcome to the Publish waiting for it,
// until the producer is closed.
func (p *asyncPublisher) dispatch() {
	defer close(p.done)
	succ, errs := p.producer.Successes(), p.producer.Errors()
	for succ != nil || errs != nil {
		select {
		case m, ok := <-succ:
			if !ok {
				succ = nil
				continue
			}
			m.Metadata.(chan error) <- nil
		case e, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			e.Msg.Metadata.(chan error) <- e.Err
		}
	}
}

// Publish implements message.Publisher.
func (p *asyncPublisher) Publish(topic string, msgs ...*message.Message) error {
	for len(msgs) > 0 {
		// A run of messages with distinct keys goes at once.
		keys := map[string]bool{}
		n := 0
		for n < len(msgs) && !keys[msgs[n].Metadata.Get(bus.MetadataAggregateID)] {
			keys[msgs[n].Metadata.Get(bus.MetadataAggregateID)] = true
			n++
		}
		if err := p.publishRun(topic, msgs[:n]); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

func (p *asyncPublisher) publishRun(topic string, msgs []*message.Message) error {
	results := make([]chan error, 0, len(msgs))
	var errs []error
	p.mu.RLock()
	for _, msg := range msgs {
		if p.closed {
			errs = append(errs, errPublisherClosed)
			break
		}
		pm, err := marshaler.Marshal(topic, msg)
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot marshal message %s: %w", msg.UUID, err))
			break
		}
		res := make(chan error, 1)
		pm.Metadata = res
		p.producer.Input() <- pm
		results = append(results, res)
	}
	p.mu.RUnlock()
	// Wait for the messages sent, even when one could not be.
	for i, res := range results {
		if err := <-res; err != nil {
			errs = append(errs, fmt.Errorf("cannot produce message %s: %w", msgs[i].UUID, err))
		}
	}
	return errors.Join(errs...)
}

// Close flushes the messages in flight and closes the producer.
func (p *asyncPublisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	// Close would drain Successes and Errors itself, racing dispatch.
	p.producer.AsyncClose()
	<-p.done
	return nil
}

type subscriber struct {
	*groupSubscriber
	b     *kafkaBroker
	group string
}

func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := s.b.topics.ensure(topic); err != nil {
		return nil, fmt.Errorf("kafkabroker: subscribe %s to %s: %s", s.group, topic, broker.RedactError(err, s.b.u))
	}
	ch, err := s.groupSubscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafkabroker: subscribe %s to %s: %s", s.group, topic, broker.RedactError(err, s.b.u))
	}
	return ch, nil
}

// topics creates topics on first use, through one cluster admin client.
type topics struct {
	cfg config

	mu      sync.Mutex
	admin   sarama.ClusterAdmin
	created map[string]bool
}

func (t *topics) ensure(topic string) error {
	if !t.cfg.createTopics {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.created[topic] {
		return nil
	}
	if t.admin == nil {
		admin, err := sarama.NewClusterAdmin(t.cfg.brokers, t.cfg.sarama(sarama.NewConfig()))
		if err != nil {
			return fmt.Errorf("cluster admin (to create topic %s; or set create_topics=false): %w", topic, err)
		}
		t.admin = admin
	}
	err := t.admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: t.cfg.partitions, ReplicationFactor: t.cfg.replication}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("create topic %s (or set create_topics=false): %w", topic, err)
	}
	if t.created == nil {
		t.created = map[string]bool{}
	}
	t.created[topic] = true
	return nil
}

func (t *topics) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.admin == nil {
		return nil
	}
	err := t.admin.Close()
	t.admin = nil
	if err != nil {
		return fmt.Errorf("kafkabroker: close cluster admin: %w", err)
	}
	return nil
}
