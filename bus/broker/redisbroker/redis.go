// Package redisbroker registers the "redis" and "rediss" broker schemes:
// Redis streams, through watermill-redisstream (go-redis v9).
//
// URL: redis://[user:password@]host:6379/0[?maxlen=0&claim_idle=60s] (rediss://
// for TLS). Other query parameters are go-redis's own (dial_timeout,
// pool_size, ...) and are passed to it.
//
// Query parameters:
//   - maxlen: trim each stream to about this many entries on publish
//     (default 0: never trim; a stream then grows until trimmed by hand).
//     Trimming drops entries whether or not every group read them.
//   - claim_idle: a message delivered to a subscriber and not acknowledged
//     for this long (its subscriber died, or hangs) is claimed by another
//     subscriber of the group (default 60s). A subscriber claims its own
//     such messages after 10s already (see "Restarts and outages").
//
// Layout: one stream per topic, named after the topic. A consumer group is
// a Redis stream consumer group of the same name, created on first use,
// starting at the beginning of the stream; each subscriber is a consumer of
// that group, so the subscribers of a group share the messages.
//
// Publish returns once Redis appended every message (XADD); how durable
// that is depends on the server's persistence settings (appendonly,
// appendfsync).
//
// Order: a stream keeps the publish order and a subscriber reads its group's
// messages one at a time, acknowledging each before the next, so a group
// with one subscriber sees each topic's messages, and every aggregate's
// events, in publish order, except for a message claimed from a dead
// subscriber after claim_idle. With several subscribers in a group,
// messages are spread over them regardless of the aggregate: per-aggregate
// order holds only per subscriber.
//
// Restarts and outages: go-redis opens a new connection on the next
// command, so there is no reconnect loop to back off: the publisher's
// command fails and the relay retries it; a subscriber whose read failed
// reads again after watermill-redisstream's fixed pause of 500 ms; a
// command's own retries pause at most 512 ms (go-redis's
// max_retry_backoff) or broker.Options.ReconnectMax (2 s by default; the
// reconnect_max URL parameter sets it), whichever is shorter. A message the
// server handed to a subscriber whose connection then dropped before the
// reply arrived stays pending for that subscriber, which claims it again
// once it is idle for 10 seconds (at most claim_idle), checking every 5
// seconds: it is delivered late, not lost (watermill-redisstream alone
// would leave it to claim_idle, 60 s by default). For the group's state to
// survive a restart, the server must persist it (appendonly yes, or RDB
// snapshots at shutdown).
//
// Permanent errors (bus.Permanent: the relay dead-letters the event instead
// of retrying it for as long as it fails): a message with a payload or
// metadata larger than the server's proto-max-bulk-len (512 MB by default),
// WRONGTYPE (the topic's key holds something other than a stream), NOPERM
// (the user's ACL does not allow the topic's key), and metadata holding the
// key watermill-redisstream reserves for the message UUID. Redis answers a
// too large argument by closing the connection, often before its error
// arrives, which looks like an outage: so the publisher reads
// proto-max-bulk-len once, at Open (CONFIG GET), and refuses such a message
// itself; when the server does not allow CONFIG GET, the check is skipped.
// Everything else, connection failures, timeouts, OOM (maxmemory reached),
// a read-only replica, LOADING, is retried for as long as it lasts.
package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack"

	"github.com/edupulse/eventbus/bus/broker"
)

// Schemes this package registers.
const (
	Scheme    = "redis"
	SchemeTLS = "rediss"
)

// ClaimIdleDefault is the default of the claim_idle query parameter.
const ClaimIdleDefault = 60 * time.Second

const nackResendSleep = 100 * time.Millisecond

// ownClaimIdle is how long a message pending for a subscriber itself stays
// idle before the subscriber claims it again, and hands it out once more:
// across a restart, the server may have handed it a message whose reply
// the dropped connection lost, and that message would otherwise wait for
// claim_idle. A message whose handler runs longer than this is handed out
// again once it is done: a duplicate, which the inbox skips.
const ownClaimIdle = 10 * time.Second

func init() {
	broker.Register(Scheme, Open)
	broker.Register(SchemeTLS, Open)
}

type config struct {
	opts      *redis.Options
	maxlen    int64
	claimIdle time.Duration
}

// boundRetries bounds go-redis's pause between a command's retries by
// reconnectMax (broker.Options.ReconnectMax).
func (c config) boundRetries(reconnectMax time.Duration) {
	current := c.opts.MaxRetryBackoff
	if current == 0 {
		current = goRedisMaxRetryBackoff
	}
	if reconnectMax > 0 && current > reconnectMax {
		c.opts.MaxRetryBackoff = reconnectMax
	}
}

// goRedisMaxRetryBackoff is go-redis's default MaxRetryBackoff.
const goRedisMaxRetryBackoff = 512 * time.Millisecond

func parseURL(u *url.URL) (config, error) {
	c := config{claimIdle: ClaimIdleDefault}
	q := u.Query()
	if v := q.Get("maxlen"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return c, fmt.Errorf("redisbroker: maxlen=%q: want a non-negative integer", v)
		}
		c.maxlen = n
	}
	if v := q.Get("claim_idle"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("redisbroker: claim_idle=%q: want a positive duration such as 60s", v)
		}
		c.claimIdle = d
	}
	q.Del("maxlen")
	q.Del("claim_idle")
	s := *u
	s.RawQuery = q.Encode()
	s.Fragment = ""
	opts, err := redis.ParseURL(s.String())
	if err != nil {
		return c, fmt.Errorf("redisbroker: %s", broker.RedactError(err, u))
	}
	c.opts = opts
	return c, nil
}

// client opens a client (a connection pool) and checks the server answers.
func (c config) client(ctx context.Context, name string) (*redis.Client, error) {
	opts := *c.opts
	opts.ClientName = name
	cl := redis.NewClient(&opts)
	if err := cl.Ping(ctx).Err(); err != nil {
		_ = cl.Close()
		return nil, fmt.Errorf("redisbroker: ping %s: %w", opts.Addr, err)
	}
	return cl, nil
}

type redisBroker struct {
	cfg    config
	u      *url.URL
	logger watermill.LoggerAdapter
	pub    *redisstream.Publisher

	subs broker.Subscribers
}

// Open is the redis driver.
func Open(ctx context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.boundRetries(opts.ReconnectMax)
	cl, err := cfg.client(ctx, "eventbus-publisher")
	if err != nil {
		return nil, err
	}
	logger := watermill.NewSlogLogger(opts.Logger)
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client:        cl,
		Marshaller:    marshaller{maxBulkLen: maxBulkLen(ctx, cl)},
		DefaultMaxlen: cfg.maxlen,
	}, logger)
	if err != nil {
		_ = cl.Close()
		return nil, fmt.Errorf("redisbroker: publisher: %w", err)
	}
	return &redisBroker{cfg: cfg, u: u, logger: logger, pub: pub}, nil
}

func (b *redisBroker) Publisher() message.Publisher {
	return broker.Publisher{Publisher: b.pub, Name: "redisbroker", URL: b.u, Permanent: permanent}
}

func (b *redisBroker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("redisbroker: empty consumer group")
	}
	sub, err := broker.Track(&b.subs, func() (*redisstream.Subscriber, error) {
		consumer := watermill.NewShortUUID()
		cl, err := b.cfg.client(context.Background(), "eventbus-"+group+"-"+consumer)
		if err != nil {
			return nil, errors.New(broker.RedactError(err, b.u))
		}
		// The subscriber closes the client when it closes.
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        cl,
			Unmarshaller:  marshaller{},
			Consumer:      consumer,
			ConsumerGroup: group,
			OldestId:      "0",
			// Pending messages idle for ownClaimIdle are looked at: this
			// subscriber's own are claimed again (see ownClaimIdle), other
			// subscribers' once idle for claim_idle.
			MaxIdleTime:   min(ownClaimIdle, b.cfg.claimIdle),
			ClaimInterval: min(redisstream.DefaultClaimInterval, b.cfg.claimIdle),
			ShouldClaimPendingMessage: func(p redis.XPendingExt) bool {
				return p.Idle >= b.cfg.claimIdle || p.Consumer == consumer
			},
			// Block at most BlockTime per read, so that Close is not stuck
			// behind a read waiting for a message.
			DisableIndefiniteInitialBlock: true,
			BlockTime:                     time.Second,
			// A nacked message is handed out again after this pause (the same
			// message: the stream does not move on meanwhile).
			NackResendSleep: nackResendSleep,
			// Stop reading, without the half-second pause of other errors,
			// once the subscription or the client is closed.
			ShouldStopOnReadErrors: closing,
		}, quietLogger{b.logger.With(watermill.LogFields{"consumer_group": group})})
		if err != nil {
			_ = cl.Close()
			return nil, err
		}
		return sub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisbroker: subscriber %s: %w", group, err)
	}
	return subscriber{sub, b, group}, nil
}

func (b *redisBroker) Close() error {
	already, err := b.subs.Close(func(err error) bool { return errors.Is(err, redis.ErrClosed) })
	if already {
		return nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("redisbroker: close subscribers: %w", err))
	}
	if err := b.pub.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		errs = append(errs, fmt.Errorf("redisbroker: close publisher: %w", err))
	}
	return errors.Join(errs...)
}

// maxBulkLen returns the server's proto-max-bulk-len, the largest argument
// it accepts, or 0 when the server does not tell (CONFIG refused).
func maxBulkLen(ctx context.Context, cl *redis.Client) int64 {
	v, err := cl.ConfigGet(ctx, "proto-max-bulk-len").Result()
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(v["proto-max-bulk-len"], 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// errTooLarge is returned for a message with a field larger than the
// server's proto-max-bulk-len.
var errTooLarge = errors.New("message too large")

// permanent reports whether a publish error is one Redis returns for these
// messages however often they are sent (see the package doc).
func permanent(err error) bool {
	return errors.Is(err, errTooLarge) ||
		errors.Is(err, errReservedMetadata) ||
		redis.HasErrorPrefix(err, "WRONGTYPE") || // the topic's key holds no stream
		redis.HasErrorPrefix(err, "NOPERM") || // the user may not write to the topic's key
		redis.HasErrorPrefix(err, "ERR Protocol error: invalid bulk length") // above proto-max-bulk-len
}

type subscriber struct {
	*redisstream.Subscriber
	b     *redisBroker
	group string
}

func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ch, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("redisbroker: subscribe %s to %s: %s", s.group, topic, broker.RedactError(err, s.b.u))
	}
	return ch, nil
}

// closing reports whether err comes from the subscription's context ending
// or its client closing.
func closing(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed)
}

// quietLogger logs the subscriber's read errors caused by a normal stop at
// debug level instead of error level.
type quietLogger struct{ watermill.LoggerAdapter }

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	if closing(err) {
		l.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"error": err.Error()}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(fields)}
}

// marshaller is watermill-redisstream's, tolerant on the way in: an entry
// from another producer, without a message UUID or with metadata that does
// not decode, still reaches the consumer (which dead-letters what it cannot
// decode) instead of stopping the subscription.
type marshaller struct {
	redisstream.DefaultMarshallerUnmarshaller
	// maxBulkLen is the server's proto-max-bulk-len (0: unknown).
	maxBulkLen int64
}

// errReservedMetadata is returned for a message whose metadata holds the
// key reserved for the message UUID.
var errReservedMetadata = errors.New("reserved metadata key")

// Marshal refuses a message Redis would refuse: with a field larger than
// the server's proto-max-bulk-len. Redis closes the connection on such an
// argument, so sending it fails with its error or with a reset connection,
// indistinguishable from an outage.
func (m marshaller) Marshal(topic string, msg *message.Message) (map[string]any, error) {
	if msg.Metadata.Get(redisstream.UUIDHeaderKey) != "" {
		return nil, fmt.Errorf("%w %s", errReservedMetadata, redisstream.UUIDHeaderKey)
	}
	values, err := m.DefaultMarshallerUnmarshaller.Marshal(topic, msg)
	if err != nil || m.maxBulkLen == 0 {
		return values, err
	}
	for k, v := range values {
		var n int
		switch v := v.(type) {
		case string:
			n = len(v)
		case []byte:
			n = len(v)
		}
		if int64(n) > m.maxBulkLen {
			return nil, fmt.Errorf("%w: its %s has %d bytes, above the server's proto-max-bulk-len %d", errTooLarge, k, n, m.maxBulkLen)
		}
	}
	return values, nil
}

// metadataUndecodable is set on a message whose metadata did not decode.
const metadataUndecodable = "eventbus_redis_metadata_error"

func (m marshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	if _, ok := values[redisstream.UUIDHeaderKey].(string); ok {
		if msg, err := m.DefaultMarshallerUnmarshaller.Unmarshal(values); err == nil {
			return msg, nil
		}
	}
	id, _ := values[redisstream.UUIDHeaderKey].(string)
	if id == "" {
		id = watermill.NewUUID()
	}
	payload, _ := values["payload"].(string)
	msg := message.NewMessage(id, []byte(payload))
	if s, _ := values["metadata"].(string); s != "" {
		md := make(message.Metadata)
		if err := msgpack.Unmarshal([]byte(s), &md); err != nil {
			msg.Metadata.Set(metadataUndecodable, err.Error())
		} else {
			msg.Metadata = md
		}
	}
	return msg, nil
}
