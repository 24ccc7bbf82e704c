package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/edupulse/eventbus/internal/db"
)

// DeadLetterStore is where a consumer keeps the messages it gives up on:
// those whose handlers kept failing, that it cannot decode, or whose event
// it does not know. Whichever it is, the consumer acknowledges such a
// message only once the store has it; when the store fails, the message is
// nacked and delivered again.
type DeadLetterStore int

const (
	// DeadLetterStoreDefault (the zero value) is DeadLetterStoreDatabase
	// when ConsumerConfig.Pool is set, and DeadLetterStoreBroker otherwise.
	DeadLetterStoreDefault DeadLetterStore = iota
	// DeadLetterStoreDatabase stores dead letters in the consumer's Pool
	// (table eventbus_consumer_dead_letters), with their group, topic,
	// reason, attempts, payload, metadata and first and last failure, where
	// DeadLetters (and `eventbus dlq`) lists, shows, replays and discards
	// them. It needs ConsumerConfig.Pool.
	DeadLetterStoreDatabase
	// DeadLetterStoreBroker publishes dead letters to
	// ConsumerConfig.DeadLetterTopic with ConsumerConfig.DeadLetter, the
	// reason in their metadata (MetadataDeadLetterReason). The publisher
	// must keep what it accepts: see DurablePublisher.
	DeadLetterStoreBroker
)

// String returns "default", "database" or "broker".
func (s DeadLetterStore) String() string {
	switch s {
	case DeadLetterStoreDefault:
		return "default"
	case DeadLetterStoreDatabase:
		return "database"
	case DeadLetterStoreBroker:
		return "broker"
	}
	return "DeadLetterStore(" + strconv.Itoa(int(s)) + ")"
}

// DurablePublisher is a publisher that can publish a message so that it
// is not lost when nobody subscribes to the topic yet. A consumer that
// dead-letters to the broker (DeadLetterStoreBroker) publishes with
// PublishDurably when its DeadLetter publisher has it, and with Publish
// otherwise, and acknowledges the original message only after that
// returned nil: a publisher without PublishDurably must keep every message
// its Publish accepts.
//
// The publishers of this module's broker adapters implement it. Kafka,
// NATS JetStream, Redis streams and the SQL broker keep a topic's messages
// for groups that subscribe later, so theirs is Publish. RabbitMQ drops a
// message no queue is bound for: amqpbroker's declares a durable queue for
// the topic and publishes with the mandatory flag. Watermill's in-process
// GoChannel keeps nothing: gochannelbroker's returns an error unless a
// subscriber of the topic acknowledged the message. A plain
// *gochannel.GoChannel has no PublishDurably, and its Publish drops a
// message nobody subscribes to: do not use it as a dead-letter publisher
// without a subscriber, or give the consumer a Pool.
type DurablePublisher interface {
	message.Publisher
	// PublishDurably publishes msgs to topic and returns nil only once
	// the broker keeps them for a reader that may come later (or a
	// subscriber acknowledged them); otherwise an error.
	PublishDurably(topic string, msgs ...*message.Message) error
}

// DeadLetterKind tells the two kinds of dead letters apart.
type DeadLetterKind string

const (
	// DeadLetterKindRelay is an outbox event the relay could never publish
	// (DeadLetter).
	DeadLetterKindRelay DeadLetterKind = "relay"
	// DeadLetterKindConsumer is a message a consumer gave up on
	// (ConsumerDeadLetter).
	DeadLetterKindConsumer DeadLetterKind = "consumer"
)

// ErrDeadLetterOtherGroup is returned by Consumer.ReplayDeadLetter for a
// dead letter of another consumer group.
var ErrDeadLetterOtherGroup = errors.New("dead letter of another consumer group")

// ErrConsumerNotStarted is returned by Consumer.ReplayDeadLetter before Run:
// the handlers are fixed when the consumer starts.
var ErrConsumerNotStarted = errors.New("bus: consumer not started; call Run before replaying dead letters to its handlers")

// ConsumerDeadLetter is a message a consumer gave up on, stored in
// PostgreSQL (DeadLetterStoreDatabase).
type ConsumerDeadLetter struct {
	// ID identifies the dead letter; ids are unique across both kinds of
	// dead letters.
	ID int64
	// Group is the consumer group that gave up on the message.
	Group string
	// Topic is the broker topic the message came from; a replay to the
	// broker publishes it there again.
	Topic string
	// MessageUUID is the message's UUID: the event id, for an event of
	// this module's outbox.
	MessageUUID string
	// EventName, EventVersion and AggregateID are read from the message's
	// metadata, when it had them.
	EventName    string
	EventVersion int
	AggregateID  string
	// Payload is the message's payload as received (the event's JSON).
	// Filled by GetConsumer only.
	Payload []byte
	// Metadata is the message's metadata. Filled by GetConsumer only.
	Metadata map[string]string
	// Reason is why the consumer gave up, the last time it did.
	Reason string
	// Attempts counts the failed attempts to handle the message, over
	// every delivery and replay.
	Attempts int
	// FirstFailedAt and LastFailedAt are when the first and the last
	// attempt failed.
	FirstFailedAt time.Time
	LastFailedAt  time.Time
	// ReplayedAt is when the dead letter was last replayed, or zero.
	ReplayedAt time.Time
}

// ConsumerListOptions filters ListConsumer.
type ConsumerListOptions struct {
	// Group lists one consumer group's dead letters only; empty lists
	// every group's.
	Group string
	// IncludeReplayed lists replayed dead letters too.
	IncludeReplayed bool
	// Limit caps the number of rows. Defaults to 100.
	Limit int
}

// Kind tells which kind of dead letter id is, or returns an error wrapping
// ErrDeadLetterNotFound.
func (d *DeadLetters) Kind(ctx context.Context, id int64) (DeadLetterKind, error) {
	k, err := d.q.DeadLetterKind(ctx, d.db, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("bus: dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("bus: dead letter %d: %w", id, err)
	}
	return DeadLetterKind(k), nil
}

// ListConsumer returns consumer dead letters, oldest first, without
// payloads.
func (d *DeadLetters) ListConsumer(ctx context.Context, opts ConsumerListOptions) ([]ConsumerDeadLetter, error) {
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	rows, err := d.q.ListConsumerDeadLetters(ctx, d.db, db.ListConsumerDeadLettersParams{
		IncludeReplayed: opts.IncludeReplayed, ConsumerGroup: opts.Group, MaxRows: int32(opts.Limit)})
	if err != nil {
		return nil, fmt.Errorf("bus: list consumer dead letters: %w", err)
	}
	out := make([]ConsumerDeadLetter, 0, len(rows))
	for _, r := range rows {
		out = append(out, ConsumerDeadLetter{
			ID: r.ID, Group: r.ConsumerGroup, Topic: r.Topic, MessageUUID: r.MessageUuid,
			EventName: r.EventName, EventVersion: int(r.EventVersion), AggregateID: r.AggregateID,
			Reason: r.Reason, Attempts: int(r.Attempts),
			FirstFailedAt: r.FirstFailedAt.Time, LastFailedAt: r.LastFailedAt.Time, ReplayedAt: r.ReplayedAt.Time,
		})
	}
	return out, nil
}

// CountConsumer returns the number of consumer dead letters not replayed.
func (d *DeadLetters) CountConsumer(ctx context.Context) (int64, error) {
	n, err := d.q.CountConsumerDeadLetters(ctx, d.db)
	if err != nil {
		return 0, fmt.Errorf("bus: count consumer dead letters: %w", err)
	}
	return n, nil
}

// GetConsumer returns one consumer dead letter with its payload and
// metadata.
func (d *DeadLetters) GetConsumer(ctx context.Context, id int64) (ConsumerDeadLetter, error) {
	r, err := d.q.GetConsumerDeadLetter(ctx, d.db, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ConsumerDeadLetter{}, fmt.Errorf("bus: consumer dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	if err != nil {
		return ConsumerDeadLetter{}, fmt.Errorf("bus: get consumer dead letter %d: %w", id, err)
	}
	dl := ConsumerDeadLetter{
		ID: r.ID, Group: r.ConsumerGroup, Topic: r.Topic, MessageUUID: r.MessageUuid,
		EventName: r.EventName, EventVersion: int(r.EventVersion), AggregateID: r.AggregateID,
		Payload: r.Payload, Reason: r.Reason, Attempts: int(r.Attempts),
		FirstFailedAt: r.FirstFailedAt.Time, LastFailedAt: r.LastFailedAt.Time, ReplayedAt: r.ReplayedAt.Time,
	}
	if len(r.Metadata) > 0 {
		if err := json.Unmarshal(r.Metadata, &dl.Metadata); err != nil {
			return ConsumerDeadLetter{}, fmt.Errorf("bus: consumer dead letter %d: metadata: %w", id, err)
		}
	}
	return dl, nil
}

// FixConsumer replaces a consumer dead letter's stored payload, to replay a
// corrected message.
func (d *DeadLetters) FixConsumer(ctx context.Context, id int64, payload []byte) error {
	if payload == nil {
		payload = []byte{}
	}
	n, err := d.q.UpdateConsumerDeadLetterPayload(ctx, d.db, db.UpdateConsumerDeadLetterPayloadParams{ID: id, Payload: payload})
	if err != nil {
		return fmt.Errorf("bus: fix consumer dead letter %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("bus: fix consumer dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	return nil
}

// ReplayConsumer publishes a consumer dead letter again to the topic it
// came from, with pub (usually the broker's publisher), under its message
// UUID and with its metadata, and then marks it replayed. Every consumer
// group subscribed to the topic receives the message again: groups that had
// handled it see a duplicate, which their inbox skips (OnTx handlers) and On
// handlers see once more (at-least-once delivery). To hand the message to
// the dead letter's group only, use Consumer.ReplayDeadLetter in a process
// that runs the group.
//
// If the consumer dead-letters the message again before it is marked (a
// publisher that returns once the consumer handled it, such as GoChannel's),
// the dead letter stays unreplayed, with its new failure, and the error
// wraps ErrDeadLetterFailedAgain. No row lock is held while publishing.
func (d *DeadLetters) ReplayConsumer(ctx context.Context, id int64, pub message.Publisher) error {
	dl, err := d.GetConsumer(ctx, id)
	if err != nil {
		return err
	}
	if err := pub.Publish(dl.Topic, dl.message(ctx)); err != nil {
		return fmt.Errorf("bus: replay consumer dead letter %d to topic %s: %w", id, dl.Topic, err)
	}
	return d.markConsumerReplayed(ctx, dl)
}

// ErrDeadLetterFailedAgain is wrapped by the error of a replay whose
// message the consumer dead-lettered again.
var ErrDeadLetterFailedAgain = errors.New("dead-lettered again")

// markConsumerReplayed marks dl replayed, unless it failed again since it
// was read.
func (d *DeadLetters) markConsumerReplayed(ctx context.Context, dl ConsumerDeadLetter) error {
	n, err := d.q.MarkConsumerDeadLetterReplayed(ctx, d.db, db.MarkConsumerDeadLetterReplayedParams{
		ID: dl.ID, LastFailedAt: pgtype.Timestamptz{Time: dl.LastFailedAt, Valid: true}})
	if err != nil {
		return fmt.Errorf("bus: mark consumer dead letter %d replayed: %w", dl.ID, err)
	}
	if n == 0 {
		now, err := d.GetConsumer(ctx, dl.ID)
		if err != nil {
			return err
		}
		return fmt.Errorf("bus: replay consumer dead letter %d: %w (attempts %d): %s", dl.ID, ErrDeadLetterFailedAgain, now.Attempts, now.Reason)
	}
	return nil
}

// DiscardConsumer deletes a consumer dead letter for good.
func (d *DeadLetters) DiscardConsumer(ctx context.Context, id int64) error {
	n, err := d.q.DeleteConsumerDeadLetter(ctx, d.db, id)
	if err != nil {
		return fmt.Errorf("bus: discard consumer dead letter %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("bus: discard consumer dead letter %d: %w", id, ErrDeadLetterNotFound)
	}
	return nil
}

// message rebuilds the dead-lettered message.
func (dl ConsumerDeadLetter) message(ctx context.Context) *message.Message {
	msg := message.NewMessage(dl.MessageUUID, dl.Payload)
	for k, v := range dl.Metadata {
		msg.Metadata[k] = v
	}
	msg.SetContext(ctx)
	return msg
}

// ReplayDeadLetter hands a consumer dead letter of the consumer's group
// straight to the group's handlers, once, in this process, and marks it
// replayed if they succeed; other groups of the topic see nothing. The
// consumer must have been started (Run), and needs its Pool. OnTx handlers
// record the event in the inbox as usual, so a dead letter that was
// meanwhile handled (redelivered, or replayed twice) is skipped. If a
// handler fails, the dead letter stays, with one more attempt and the new
// reason (an outage, see IsOutage, counts no attempt), and the error is
// returned. The attempt is not retried.
func (c *Consumer) ReplayDeadLetter(ctx context.Context, id int64) error {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		return ErrConsumerNotStarted
	}
	if c.cfg.Pool == nil {
		return fmt.Errorf("bus: consumer %s: replaying dead letters needs ConsumerConfig.Pool", c.cfg.Group)
	}
	d := NewDeadLetters(c.cfg.Pool)
	dl, err := d.GetConsumer(ctx, id)
	if err != nil {
		return err
	}
	if dl.Group != c.cfg.Group {
		return fmt.Errorf("bus: replay dead letter %d: %w %q (this consumer is %q)", id, ErrDeadLetterOtherGroup, dl.Group, c.cfg.Group)
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandlerTimeout)
	defer cancel()
	msg := dl.message(hctx)
	if herr := c.replayHandle(msg); herr != nil {
		if IsOutage(herr) { // not the message's failure
			return fmt.Errorf("bus: replay dead letter %d to consumer %s: %w", id, c.cfg.Group, herr)
		}
		if _, err := c.q.RecordConsumerReplayFailure(ctx, c.cfg.Pool, db.RecordConsumerReplayFailureParams{
			ID: id, Reason: pgText(truncateError(herr.Error()))}); err != nil {
			c.logger.Error("Recording a failed replay", err, watermill.LogFields{"dead_letter": id})
		}
		return fmt.Errorf("bus: replay dead letter %d to consumer %s: %w", id, c.cfg.Group, herr)
	}
	if err := d.markConsumerReplayed(ctx, dl); err != nil {
		return fmt.Errorf("bus: replay dead letter %d: handled, but not marked replayed: %w", id, err)
	}
	return nil
}

// replayHandle runs the handlers of a message once, a panic turned into an
// error.
func (c *Consumer) replayHandle(msg *message.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return c.handle(msg)
}

// Metadata keys of a message's failed attempts, kept on the message while
// the consumer's middlewares retry it.
const (
	metadataConsumerAttempts      = "eventbus_consumer_attempts"
	metadataConsumerFirstFailedAt = "eventbus_consumer_first_failed_at"
)

// countAttempts wraps the consumer's handler: it counts the failed attempts
// of a message, and when the first failed, in the message's metadata, for
// the dead letter. A panic counts (and goes on to the Recoverer); an
// outage does not (see IsOutage), as it does not count against MaxRetries.
func countAttempts(h message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ok := false
		defer func() {
			if ok {
				return
			}
			n, _ := strconv.Atoi(msg.Metadata.Get(metadataConsumerAttempts))
			msg.Metadata.Set(metadataConsumerAttempts, strconv.Itoa(n+1))
			if msg.Metadata.Get(metadataConsumerFirstFailedAt) == "" {
				msg.Metadata.Set(metadataConsumerFirstFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
			}
		}()
		err := h(msg)
		ok = err == nil || IsOutage(err)
		return err
	}
}

// consumerDeadLetterSink receives the messages the consumer's poison-queue
// middleware gives up on, stores them (in PostgreSQL or on the broker
// topic) and counts them. An error from Publish makes the router nack the
// message, which is then delivered again: a message is acknowledged only
// once its dead letter is stored.
type consumerDeadLetterSink struct {
	c        *Consumer
	store    DeadLetterStore // resolved: database or broker
	failures atomic.Int64    // consecutive failures to store a dead letter
}

// newDeadLetterSink returns the consumer's dead-letter sink.
func (c *Consumer) newDeadLetterSink() *consumerDeadLetterSink {
	return &consumerDeadLetterSink{c: c, store: c.cfg.DeadLetterStore}
}

// storeTimeout bounds the storing of one dead letter.
const storeTimeout = 10 * time.Second

// Publish implements message.Publisher for the poison-queue middleware.
func (s *consumerDeadLetterSink) Publish(topic string, msgs ...*message.Message) error {
	var ids []int64
	var err error
	if s.store == DeadLetterStoreDatabase {
		ids, err = s.storeInDatabase(msgs)
	} else {
		err = s.publish(topic, msgs)
	}
	if err != nil {
		// The message is nacked, and a broker may deliver it again at
		// once: wait first, longer after each failure in a row, so that a
		// store that stays down is not hammered.
		n := s.failures.Add(1)
		delay := backoffDelay(int(n), s.c.cfg.BackoffInitial, s.c.cfg.BackoffMax)
		s.c.logger.Error("Storing a dead letter failed; the message is nacked and delivered again", err,
			watermill.LogFields{"store": s.store.String(), "uuid": msgs[0].UUID, "failures": n, "nack_after": delay})
		s.c.sleepUnlessStopping(delay)
		return err
	}
	s.failures.Store(0)
	s.c.dead.Add(int64(len(msgs)))
	for i, m := range msgs {
		fields := watermill.LogFields{"uuid": m.UUID, "topic": m.Metadata.Get(middleware.PoisonedTopicKey),
			"event_name": m.Metadata.Get(MetadataName), "attempts": m.Metadata.Get(metadataConsumerAttempts)}
		if ids != nil {
			fields["dead_letter"] = ids[i]
		} else {
			fields["dead_letter_topic"] = topic
		}
		s.c.logger.Error("Message dead-lettered", errors.New(m.Metadata.Get(middleware.ReasonForPoisonedKey)), fields)
	}
	return nil
}

// Close implements message.Publisher.
func (*consumerDeadLetterSink) Close() error { return nil }

// sleepUnlessStopping sleeps for d, or until the consumer stops.
func (c *Consumer) sleepUnlessStopping(d time.Duration) {
	const step = 20 * time.Millisecond
	for end := time.Now().Add(d); !c.stopping.Load(); {
		left := time.Until(end)
		if left <= 0 {
			return
		}
		time.Sleep(min(left, step))
	}
}

// publish sends dead letters to the broker topic, durably when the
// publisher can tell.
func (s *consumerDeadLetterSink) publish(topic string, msgs []*message.Message) error {
	// The handler's context may be cancelled by now (an attempt's timeout
	// ends with it); publishers that honour the message context would
	// fail, so publish copies with a live one.
	copies := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		copies[i] = m.Copy()
		copies[i].SetContext(context.WithoutCancel(m.Context()))
	}
	pub := s.c.cfg.DeadLetter
	if dp, ok := pub.(DurablePublisher); ok {
		if err := dp.PublishDurably(topic, copies...); err != nil {
			return fmt.Errorf("publish the dead letter to %s durably: %w", topic, err)
		}
		return nil
	}
	if err := pub.Publish(topic, copies...); err != nil {
		return fmt.Errorf("publish the dead letter to %s: %w", topic, err)
	}
	return nil
}

// storeInDatabase writes dead letters to eventbus_consumer_dead_letters,
// in one transaction.
func (s *consumerDeadLetterSink) storeInDatabase(msgs []*message.Message) ([]int64, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msgs[0].Context()), storeTimeout)
	defer cancel()
	ids := make([]int64, 0, len(msgs))
	err := pgx.BeginFunc(ctx, s.c.cfg.Pool, func(tx pgx.Tx) error {
		for _, m := range msgs {
			arg, err := s.c.deadLetterRow(m)
			if err != nil {
				return err
			}
			id, err := s.c.q.InsertConsumerDeadLetter(ctx, tx, arg)
			if err != nil {
				return fmt.Errorf("store the dead letter of message %s: %w", m.UUID, err)
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// deadLetterMetadataKeys are the metadata keys stored in columns of their
// own, or that only the consumer's middlewares use: not stored with a
// dead letter's metadata, nor republished by a replay.
var deadLetterMetadataKeys = []string{
	middleware.ReasonForPoisonedKey, middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey,
	middleware.PoisonedSubscriberKey, metadataConsumerAttempts, metadataConsumerFirstFailedAt,
}

// deadLetterRow is the row of a dead-lettered message.
func (c *Consumer) deadLetterRow(m *message.Message) (db.InsertConsumerDeadLetterParams, error) {
	md := make(map[string]string, len(m.Metadata))
	for k, v := range m.Metadata {
		md[pgText(k)] = pgText(v)
	}
	for _, k := range deadLetterMetadataKeys {
		delete(md, k)
	}
	meta, err := marshalMetadata(md)
	if err != nil {
		return db.InsertConsumerDeadLetterParams{}, err
	}
	attempts, _ := strconv.Atoi(m.Metadata.Get(metadataConsumerAttempts))
	first, err := time.Parse(time.RFC3339Nano, m.Metadata.Get(metadataConsumerFirstFailedAt))
	if err != nil {
		first = time.Now()
	}
	version, _ := strconv.Atoi(m.Metadata.Get(MetadataVersion))
	payload := m.Payload
	if payload == nil {
		payload = []byte{}
	}
	topic := m.Metadata.Get(middleware.PoisonedTopicKey)
	if topic == "" {
		topic = message.SubscribeTopicFromCtx(m.Context())
	}
	return db.InsertConsumerDeadLetterParams{
		ConsumerGroup: c.cfg.Group,
		Topic:         pgText(topic),
		MessageUuid:   pgText(m.UUID),
		EventName:     pgText(m.Metadata.Get(MetadataName)),
		EventVersion:  int32(version),
		AggregateID:   pgText(m.Metadata.Get(MetadataAggregateID)),
		Payload:       payload,
		Metadata:      meta,
		Reason:        pgText(truncateError(m.Metadata.Get(middleware.ReasonForPoisonedKey))),
		Attempts:      int32(max(attempts, 1)),
		FirstFailedAt: pgtype.Timestamptz{Time: first, Valid: true},
	}, nil
}

// pgText makes s storable as PostgreSQL text: valid UTF-8 without NUL
// bytes. A message from another producer may carry anything in its UUID or
// metadata, and a dead letter that cannot be stored would be delivered
// again forever.
func pgText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
