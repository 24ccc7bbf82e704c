package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/edupulse/eventbus/internal/db"
)

// Defaults of ConsumerConfig.
const (
	DeadLetterTopicDefault        = "eventbus_dead_letters"
	ConsumerMaxRetriesDefault     = 5
	ConsumerBackoffInitialDefault = 100 * time.Millisecond
	ConsumerBackoffMaxDefault     = 5 * time.Second
	HandlerTimeoutDefault         = 30 * time.Second
	InboxRetentionDefault         = 7 * 24 * time.Hour
	InboxCleanIntervalDefault     = 10 * time.Minute
)

// MetadataDeadLetterReason holds, on a dead-lettered message, why it was
// dead-lettered (Watermill's poison-queue key).
const MetadataDeadLetterReason = middleware.ReasonForPoisonedKey

// ConsumerConfig configures a Consumer. Zero values take the documented
// defaults.
type ConsumerConfig struct {
	// Registry decodes messages into typed events. Required.
	Registry *Registry
	// Subscriber reads the broker, usually broker.Broker.Subscriber(Group).
	// Required. The consumer closes it when Run returns.
	Subscriber message.Subscriber
	// Group names the consumer: its inbox rows, its handler names, its
	// logs. Required.
	Group string
	// Routing says on which topics the events arrive: the routing their
	// producers' Outbox publishes with (OutboxConfig.Routing), the same
	// value. Defaults to the routing of Outbox when that is set, else to
	// routing by event name, the Outbox's default. NewConsumer refuses a
	// Routing that sends an event type elsewhere than Outbox's does.
	Routing Routing
	// Topics narrows the consumer to some of the topics Routing gives the
	// registry's event types; NewConsumer refuses a topic that no event is
	// routed to, and Run a typed handler whose events are routed to a
	// topic left out. Defaults to every topic of Routing (see
	// Routing.Topics).
	Topics []string
	// DeadLetterStore is where the consumer keeps the messages it gives up
	// on: messages that cannot be decoded (unknown wire name or version,
	// malformed payload) and messages whose handlers kept failing. The
	// default stores them in PostgreSQL when Pool is set
	// (DeadLetterStoreDatabase: listed, replayed and discarded with
	// DeadLetters, ReplayDeadLetter and `eventbus dlq`), and publishes them
	// to DeadLetterTopic otherwise (DeadLetterStoreBroker). Either way a
	// message is acknowledged only once its dead letter is stored; if that
	// fails, it is nacked and delivered again.
	DeadLetterStore DeadLetterStore
	// DeadLetter publishes dead letters to DeadLetterTopic, with the reason
	// in their metadata (MetadataDeadLetterReason), when they go to the
	// broker. Usually the broker's publisher, whose PublishDurably (see
	// DurablePublisher) keeps them also when nobody subscribes to the
	// topic. Required when dead letters go to the broker (without a Pool,
	// or with DeadLetterStoreBroker); unused otherwise.
	DeadLetter message.Publisher
	// DeadLetterTopic defaults to "eventbus_dead_letters".
	DeadLetterTopic string
	// Pool is the database of the inbox, required by OnTx handlers, and
	// where dead letters are stored by default.
	Pool *pgxpool.Pool
	// Outbox publishes the events OnTx handlers return, in their
	// transaction. Required when an OnTx handler returns events. Its
	// routing is the consumer's unless Routing is set.
	Outbox *Outbox
	// MaxRetries is the number of retries of a failing handler before the
	// message is dead-lettered. Attempts that fail on an outage (see
	// IsOutage: the inbox database is unreachable, or the connection to it
	// was lost) do not count: they are retried for as long as the outage
	// lasts. Defaults to 5.
	MaxRetries int
	// BackoffInitial and BackoffMax bound the backoff between retries,
	// outages included. Default to 100 milliseconds and 5 seconds.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// HandlerTimeout bounds one attempt of the handlers of one message.
	// Defaults to 30 seconds.
	HandlerTimeout time.Duration
	// InboxRetention is how long the group's inbox rows are kept: a
	// redelivery older than that is no longer recognised. Each consumer
	// cleans its own group's rows only, so groups can keep different
	// retentions. Defaults to 7 days; negative disables the inbox cleaner.
	InboxRetention time.Duration
	// InboxCleanInterval defaults to 10 minutes.
	InboxCleanInterval time.Duration
	// TracerProvider makes the consumer's spans, which continue the
	// producer's trace (the traceparent metadata). Defaults to the global
	// OpenTelemetry provider.
	TracerProvider trace.TracerProvider
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Middlewares are extra Watermill handler middlewares, run inside the
	// consumer's (dead letter, retry, timeout, panic recovery).
	Middlewares []message.HandlerMiddleware
	// CloseTimeout bounds the wait for handlers when Run's context ends.
	// Defaults to 30 seconds.
	CloseTimeout time.Duration
	// UnknownVersion says what becomes of an event the consumer may be
	// meant to handle but has no handler for, typically a version newer
	// than its own: a name or version its registry lacks, or a version
	// without a handler of a name it handles in others. Dead letter, retry
	// later or skip: see UnknownVersionPolicy. Defaults to
	// UnknownVersionDeadLetter.
	UnknownVersion UnknownVersionPolicy
}

func (c *ConsumerConfig) setDefaults() {
	c.DeadLetterTopic = cmp.Or(c.DeadLetterTopic, DeadLetterTopicDefault)
	c.MaxRetries = cmp.Or(c.MaxRetries, ConsumerMaxRetriesDefault)
	c.BackoffInitial = cmp.Or(c.BackoffInitial, ConsumerBackoffInitialDefault)
	c.BackoffMax = cmp.Or(c.BackoffMax, ConsumerBackoffMaxDefault)
	c.HandlerTimeout = cmp.Or(c.HandlerTimeout, HandlerTimeoutDefault)
	c.InboxRetention = cmp.Or(c.InboxRetention, InboxRetentionDefault)
	c.InboxCleanInterval = cmp.Or(c.InboxCleanInterval, InboxCleanIntervalDefault)
	c.CloseTimeout = cmp.Or(c.CloseTimeout, ShutdownTimeoutDefault)
	c.UnknownVersion = cmp.Or(c.UnknownVersion, UnknownVersionDefault)
	c.setRoutingDefaults()
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DeadLetterStore == DeadLetterStoreDefault {
		c.DeadLetterStore = DeadLetterStoreBroker
		if c.Pool != nil {
			c.DeadLetterStore = DeadLetterStoreDatabase
		}
	}
}

// Validate reports every problem of the configuration.
func (c ConsumerConfig) Validate() error {
	var errs []error
	if c.Registry == nil {
		errs = append(errs, errors.New("nil Registry"))
	}
	if c.Subscriber == nil {
		errs = append(errs, errors.New("nil Subscriber"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("empty Group"))
	}
	switch c.DeadLetterStore {
	case DeadLetterStoreDefault:
		if c.Pool == nil && c.DeadLetter == nil {
			errs = append(errs, errors.New("nil DeadLetter publisher: without a Pool, dead letters go to the broker"))
		}
	case DeadLetterStoreDatabase:
		if c.Pool == nil {
			errs = append(errs, errors.New("DeadLetterStoreDatabase needs a Pool"))
		}
	case DeadLetterStoreBroker:
		if c.DeadLetter == nil {
			errs = append(errs, errors.New("nil DeadLetter publisher: DeadLetterStoreBroker publishes dead letters with it"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown DeadLetterStore %d", c.DeadLetterStore))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("negative MaxRetries %d", c.MaxRetries))
	}
	if c.HandlerTimeout < 0 || c.BackoffInitial < 0 || c.BackoffMax < 0 || c.CloseTimeout < 0 {
		errs = append(errs, errors.New("negative duration"))
	}
	if c.UnknownVersion != "" && !c.UnknownVersion.Valid() {
		errs = append(errs, fmt.Errorf("UnknownVersion %q is not a policy (want one of %v)", c.UnknownVersion, AllUnknownVersionPolicyValues()))
	}
	if err := c.validateRouting(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bus: invalid consumer config: %w", err)
	}
	return nil
}

// ConsumerStats counts what a consumer did since it was made.
type ConsumerStats struct {
	// Handled counts messages whose handlers all succeeded (duplicates
	// included).
	Handled int64
	// Failed counts failed handler attempts.
	Failed int64
	// Duplicates counts messages the inbox recognised as already handled.
	Duplicates int64
	// DeadLettered counts messages dead-lettered: stored in PostgreSQL or
	// published to the dead-letter topic (see ConsumerConfig.DeadLetterStore).
	DeadLettered int64
	// OutageRetries counts the failed attempts that were taken for an
	// outage (see IsOutage) and retried without counting against
	// MaxRetries; they are counted in Failed too.
	OutageRetries int64
	// Postponed counts deliveries of events without a handler that were
	// nacked for redelivery under UnknownVersionRetry.
	Postponed int64
	// Skipped counts events without a handler that were acked unhandled
	// under UnknownVersionSkip.
	Skipped int64
}

type handlerFunc func(ctx context.Context, ev Event) error

type txHandlerFunc func(ctx context.Context, tx pgx.Tx, ev Event) ([]Event, error)

// ErrConsumerStarted is returned by On, OnTx, OnAny and OnAnyTx once Run
// has been called: the handlers are fixed when the consumer starts.
var ErrConsumerStarted = errors.New("bus: consumer already started; register handlers before Run")

// route is the handlers of one wire name and version, those of every event
// included.
type route struct {
	plain []handlerFunc
	tx    []txHandlerFunc
}

// Consumer subscribes to a broker and hands typed events to handlers.
//
// Delivery is at least once. Handlers registered with On may see an event
// more than once; handlers registered with OnTx run in a database
// transaction that also records the event in the inbox, so their effects
// happen once per event: a redelivered event is recognised and skipped.
//
// Typed handlers are keyed by wire name and version: On[T] receives the
// events of T's name and version, and those of earlier versions that the
// registry can upcast to T's version (see Registry.Upcast), converted; a
// handler of an earlier version still receives exactly its own version. A
// message of a version that no handler takes, even upcast, while another
// version of its name has handlers, follows ConsumerConfig.UnknownVersion
// (dead-lettered at once with a reason wrapping ErrUnknownVersion by
// default), unless an OnAny or OnAnyTx handler takes every event (those
// receive events as published); so does a message of a name or version the
// registry lacks. Messages of a registered name without any handler are
// acked.
//
// A handler's own errors are retried MaxRetries times before the message
// is dead-lettered; failures caused by an outage (the inbox database is
// unreachable, a COMMIT's outcome is unknown) are retried until the outage
// ends, and a consumer stopped meanwhile nacks the message.
//
// Register handlers before Run; a Consumer runs once.
type Consumer struct {
	cfg    ConsumerConfig
	logger watermill.LoggerAdapter
	tracer trace.Tracer
	q      *db.Queries

	mu         sync.Mutex
	started    bool
	regErrs    []error                   // failed registrations, refused again by Run
	plain      map[typeKey][]handlerFunc // by wire name and version; the zero key is any event
	tx         map[typeKey][]txHandlerFunc
	routes     map[typeKey]route // set by Run: the handlers of each registered type
	versions   map[string][]int  // set by Run: the versions with typed handlers, by name
	stopping   atomic.Bool
	router     *message.Router
	handled    atomic.Int64
	failed     atomic.Int64
	duplicates atomic.Int64
	dead       atomic.Int64
	// counted by the retry middleware and the unknown-version policy
	outageRetries, postponed, skipped atomic.Int64
}

// NewConsumer validates cfg and returns a Consumer.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	logger := newWatermillLogger(cfg.Logger.With("consumer_group", cfg.Group))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, logger)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer: %w", err)
	}
	return &Consumer{
		cfg: cfg, logger: logger, q: db.New(), router: router,
		tracer: cfg.TracerProvider.Tracer("github.com/edupulse/eventbus/bus"),
		plain:  map[typeKey][]handlerFunc{}, tx: map[typeKey][]txHandlerFunc{},
	}, nil
}

// handlerKey returns the wire name and version of the event type T, read
// from its zero value, and refuses a T that cannot be a handler's type: an
// interface (use OnAny), a type whose zero value cannot answer EventName
// (such as a pointer to a generated event), or an event the consumer's
// registry does not hold (its handler could never run).
func handlerKey[T Event](c *Consumer, on string) (k typeKey, err error) {
	typ := reflect.TypeFor[T]()
	fail := func(format string, args ...any) (typeKey, error) {
		return typeKey{}, fmt.Errorf("bus: %s[%v]: %s", on, typ, fmt.Sprintf(format, args...))
	}
	if typ.Kind() == reflect.Interface {
		return fail("an interface type cannot be a handler's event type; use OnAny or OnAnyTx with a dispatcher")
	}
	defer func() {
		if p := recover(); p != nil {
			k, err = fail("EventName or EventVersion panicked on the zero value (%v); register the event type itself, not a pointer to it", p)
		}
	}()
	var zero T
	k = typeKey{zero.EventName(), zero.EventVersion()}
	if _, ok := c.cfg.Registry.Lookup(k.name, k.version); !ok {
		return fail("event %s version %d is not in the consumer's registry", k.name, k.version)
	}
	return k, nil
}

// register adds a handler under key unless the consumer has started, and
// records a failed registration so that Run refuses to start.
func (c *Consumer) register(keyErr error, add func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return ErrConsumerStarted
	}
	if keyErr != nil {
		c.regErrs = append(c.regErrs, keyErr)
		return keyErr
	}
	add()
	return nil
}

// On registers fn for events of type T, that is of T's wire name and
// version. fn may run more than once for one event (at-least-once
// delivery); use OnTx for exactly-once effects.
//
// On returns an error, and registers nothing, when T is an interface type,
// when T's name and version are not in the consumer's registry, or after
// Run (ErrConsumerStarted). Run then fails with the same error, so a
// registration error cannot go unnoticed.
func On[T Event](c *Consumer, fn func(ctx context.Context, ev T) error) error {
	k, err := handlerKey[T](c, "On")
	return c.register(err, func() {
		c.plain[k] = append(c.plain[k], func(ctx context.Context, ev Event) error {
			t, ok := ev.(T)
			if !ok {
				return Permanent(fmt.Errorf("handler for %T was given a %T", t, ev))
			}
			return fn(ctx, t)
		})
	})
}

// OnTx registers fn for events of type T (T's wire name and version), run
// in a transaction on the consumer's Pool that first records (group, event
// id) in the inbox. If the inbox already holds the event, fn is skipped and
// the message acked. The events fn returns are published through the Outbox
// in the same transaction (chained events). Effects of fn and the inbox mark
// commit together, then the message is acked.
//
// OnTx returns an error in the same cases as On.
func OnTx[T Event](c *Consumer, fn func(ctx context.Context, tx pgx.Tx, ev T) ([]Event, error)) error {
	k, err := handlerKey[T](c, "OnTx")
	return c.register(err, func() {
		c.tx[k] = append(c.tx[k], func(ctx context.Context, tx pgx.Tx, ev Event) ([]Event, error) {
			t, ok := ev.(T)
			if !ok {
				return nil, Permanent(fmt.Errorf("handler for %T was given a %T", t, ev))
			}
			return fn(ctx, tx, t)
		})
	})
}

// OnAny registers fn for every event, of every name and version; generated
// code passes its exhaustive dispatcher here: c.OnAny(func(ctx
// context.Context, ev bus.Event) error { return gen.Dispatch(ctx, handler,
// ev) }). It returns ErrConsumerStarted after Run.
func (c *Consumer) OnAny(fn func(ctx context.Context, ev Event) error) error {
	return c.register(nil, func() { c.plain[typeKey{}] = append(c.plain[typeKey{}], fn) })
}

// OnAnyTx is OnTx for every event. It returns ErrConsumerStarted after Run.
func (c *Consumer) OnAnyTx(fn func(ctx context.Context, tx pgx.Tx, ev Event) ([]Event, error)) error {
	return c.register(nil, func() { c.tx[typeKey{}] = append(c.tx[typeKey{}], fn) })
}

// Group returns the consumer group.
func (c *Consumer) Group() string { return c.cfg.Group }

// Stats returns the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{Handled: c.handled.Load(), Failed: c.failed.Load(), Duplicates: c.duplicates.Load(), DeadLettered: c.dead.Load(),
		OutageRetries: c.outageRetries.Load(), Postponed: c.postponed.Load(), Skipped: c.skipped.Load()}
}

// Running is closed once the consumer has subscribed to every topic.
func (c *Consumer) Running() <-chan struct{} { return c.router.Running() }

// Run consumes until ctx ends, then waits for the handlers in flight (at
// most CloseTimeout) and returns.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return fmt.Errorf("bus: consumer %s: Run called twice", c.cfg.Group)
	}
	c.started = true
	regErr := errors.Join(c.regErrs...)
	needTx := len(c.tx) > 0
	// The handlers are fixed from here on: resolve each event type's once,
	// upcasting included (upcast.go).
	c.routes, c.versions = c.resolveRoutes()
	c.mu.Unlock()
	if regErr != nil {
		return fmt.Errorf("bus: consumer %s: handler registration failed: %w", c.cfg.Group, regErr)
	}
	if needTx && c.cfg.Pool == nil {
		return errors.New("bus: consumer: OnTx handlers need ConsumerConfig.Pool")
	}
	if err := c.checkHandlerTopics(); err != nil {
		return fmt.Errorf("bus: consumer %s: %w", c.cfg.Group, err)
	}
	poison, err := middleware.PoisonQueueWithFilter(c.newDeadLetterSink(), c.cfg.DeadLetterTopic,
		func(error) bool { return !c.stopping.Load() })
	if err != nil {
		return fmt.Errorf("bus: consumer: %w", err)
	}
	// stop ends when the consumer starts stopping: the retry middleware
	// then cuts the attempt or the pause in progress short and nacks.
	stop, stopNow := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNow()
	retry := newConsumerRetry(c, stop)
	mws := []message.HandlerMiddleware{poison, retry.middleware, middleware.Recoverer}
	mws = append(mws, c.cfg.Middlewares...)
	for _, topic := range c.cfg.Topics {
		h := c.router.AddConsumerHandler(c.cfg.Group+"/"+topic, topic, c.cfg.Subscriber, countAttempts(c.handle))
		h.AddMiddleware(mws...)
	}
	if c.cfg.Pool != nil && c.cfg.InboxRetention > 0 {
		cleanCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go c.cleanInbox(cleanCtx)
	}
	// Flag the stop before the router cancels the handlers' contexts, so
	// that a handler cut short is nacked (redelivered later), never
	// retried or dead-lettered.
	routerCtx, cancelRouter := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRouter()
	go func() {
		select {
		case <-ctx.Done():
		case <-routerCtx.Done():
		}
		c.stopping.Store(true)
		stopNow()
		cancelRouter()
	}()
	err = c.router.Run(routerCtx)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("bus: consumer %s: %w", c.cfg.Group, err)
	}
	return nil
}

// handle decodes a message and runs its handlers.
func (c *Consumer) handle(msg *message.Message) error {
	ctx := propagation.TraceContext{}.Extract(msg.Context(), propagation.MapCarrier(msg.Metadata))
	ev, err := c.cfg.Registry.Decode(msg)
	if err != nil {
		return c.undecodable(msg, err)
	}
	ctx, span := c.tracer.Start(ctx, "eventbus consume "+ev.EventName(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.message.id", msg.UUID),
			attribute.String("messaging.consumer.group.name", c.cfg.Group),
			attribute.String("eventbus.event.name", ev.EventName()),
			attribute.String("eventbus.aggregate.id", ev.Envelope().AggregateID),
		))
	defer span.End()
	if err := c.dispatch(ctx, ev); err != nil {
		if errors.Is(err, errSkipped) {
			return nil
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	c.handled.Add(1)
	return nil
}

func (c *Consumer) dispatch(ctx context.Context, ev Event) error {
	rt := c.routes[typeKey{ev.EventName(), ev.EventVersion()}] // a decoded event's type is registered
	plain, txs := rt.plain, rt.tx
	if len(plain)+len(txs) == 0 {
		if versions := c.versions[ev.EventName()]; len(versions) > 0 {
			// Another version of this name has handlers: the consumer
			// expects the name, and this version would be lost silently.
			return c.unknownEvent(ev.EventName(), ev.EventVersion(), ev.Envelope().ID.String(),
				fmt.Errorf("consumer %s has no handler for %s version %d (handles version %s): %w",
					c.cfg.Group, ev.EventName(), ev.EventVersion(), joinInts(versions), ErrUnknownVersion))
		}
		return nil // a name this consumer does not handle
	}
	for _, h := range plain {
		if err := h(ctx, ev); err != nil {
			return fmt.Errorf("handle %s %s: %w", ev.EventName(), ev.Envelope().ID, err)
		}
	}
	if len(txs) == 0 {
		return nil
	}
	return c.inboxTx(ctx, func(tx pgx.Tx) error {
		claimed, err := c.q.ClaimInbox(ctx, tx, db.ClaimInboxParams{ConsumerGroup: c.cfg.Group, EventID: uuidToPg(ev.Envelope().ID)})
		if err != nil {
			return fmt.Errorf("inbox: %w", err)
		}
		if claimed == 0 {
			c.duplicates.Add(1)
			return nil
		}
		for _, h := range txs {
			chained, err := h(ctx, tx, ev)
			if err != nil {
				return fmt.Errorf("handle %s %s: %w", ev.EventName(), ev.Envelope().ID, err)
			}
			if len(chained) > 0 {
				if c.cfg.Outbox == nil {
					return Permanent(fmt.Errorf("handle %s: the handler returned events but ConsumerConfig.Outbox is nil", ev.EventName()))
				}
				if err := c.cfg.Outbox.Publish(ctx, tx, chained...); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func joinInts(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}

func uuidToPg(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// cleanInbox deletes the group's inbox rows older than the retention,
// periodically; other groups' rows are left to their own consumers.
func (c *Consumer) cleanInbox(ctx context.Context) {
	t := time.NewTicker(c.cfg.InboxCleanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := pgtype.Timestamptz{Time: time.Now().Add(-c.cfg.InboxRetention), Valid: true}
		arg := db.DeleteInboxBeforeParams{ConsumerGroup: c.cfg.Group, Before: before}
		if _, err := c.q.DeleteInboxBefore(ctx, c.cfg.Pool, arg); err != nil && ctx.Err() == nil {
			c.logger.Error("Inbox cleaner failed", err, nil)
		}
	}
}
