package bus

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/sync/errgroup"

	"github.com/edupulse/eventbus/internal/db"
	"github.com/edupulse/eventbus/schema"
)

// Defaults of RelayConfig.
const (
	ConsumerGroupDefault   = "eventbus_relay"
	PollIntervalDefault    = time.Second
	RetryIntervalDefault   = time.Second
	BatchSizeDefault       = 500
	MaxInFlightDefault     = 64
	MaxAttemptsDefault     = 5
	BackoffInitialDefault  = 100 * time.Millisecond
	BackoffMaxDefault      = 10 * time.Second
	AckDeadlineDefault     = 5 * time.Second
	RetentionDefault       = 24 * time.Hour
	CleanIntervalDefault   = time.Minute
	ShutdownTimeoutDefault = 30 * time.Second
)

const (
	metadataAttempts         = "eventbus_attempts"
	metadataFirstFailedAt    = "eventbus_first_failed_at"
	deadLetterTopic          = "eventbus_dead_letters"
	minPoolConnsBesidesLanes = 2
	backoffRandomization     = 0.5
	// maxConsumerGroupLen leaves room for "/<lane>" in eventbus_offsets'
	// VARCHAR(255) consumer_group.
	maxConsumerGroupLen = 250
)

// ConcurrentPublisher is a message.Publisher that says whether concurrent
// Publish calls pay off: each call returns once the broker confirmed its
// messages, and calls made at once share the broker's round trips (an
// asynchronous publish, a producer batching what it is given). The
// publishers of the broker adapters in bus/broker are. The relay keeps
// several events of a lane in flight to such a publisher by default (see
// RelayConfig.MaxInFlight).
type ConcurrentPublisher interface {
	message.Publisher
	// PublishesConcurrently reports whether concurrent Publish calls pay
	// off.
	PublishesConcurrently() bool
}

// RelayConfig configures a Relay. Zero values take the documented defaults.
type RelayConfig struct {
	// Pool is the PostgreSQL pool the outbox lives in. Required. The relay
	// opens a pool of its own with Pool's configuration, sized for it: one
	// connection per lane (each lane holds one while it relays a batch),
	// plus LISTEN and the cleaner.
	Pool *pgxpool.Pool
	// Publisher receives the events: any Watermill publisher (a broker
	// adapter, GoChannel, watermill-sql). Required. The relay does not
	// close it.
	Publisher message.Publisher
	// ConsumerGroup names the relay's offsets: relay processes sharing it
	// share the work (each lane is relayed by one of them at a time).
	// Relays of different groups each deliver every event (a fan-out to two
	// brokers, a broker migration); every group registers in the database
	// when it first runs, and the cleaner keeps a row until every
	// registered group relayed it. At most 250 bytes, without '/'.
	// Defaults to "eventbus_relay".
	ConsumerGroup string
	// Lanes restricts the relay to some lanes. Defaults to all lanes
	// recorded in the database.
	Lanes []int
	// PollInterval is how often an idle lane is queried without a NOTIFY.
	// Defaults to 1 second.
	PollInterval time.Duration
	// DisableNotify turns the LISTEN/NOTIFY wake-up off: lanes are then only
	// polled. The relay also polls only when the schema was migrated with
	// schema.WakeupPoll (the lane tables then send no NOTIFY).
	DisableNotify bool
	// RetryInterval is the pause after a failed outbox query. Defaults to 1
	// second.
	RetryInterval time.Duration
	// BatchSize is the number of rows of a lane read per query. A lane
	// holds one batch in memory, and its offset moves once per batch:
	// after a crash, at most the batch in flight of each lane is published
	// again. Each batch costs a fixed share of work (four round trips to
	// PostgreSQL, and a pause while its last events are confirmed), which
	// larger batches spread over more events: draining a backlog to
	// GoChannel, 500 relays about 15% more events per second than 100
	// (Watermill's default; BENCHMARKS.md). Lower it for large events.
	// Defaults to BatchSizeDefault (500).
	BatchSize int
	// MaxInFlight bounds the events of one lane that are being published
	// at once (or wait for an earlier event of their aggregate to be
	// confirmed). An aggregate never has more than one event in flight: a
	// later event is sent only after the broker confirmed the earlier one.
	// Events of different aggregates may then reach the broker in another
	// order than the lane's. The relay calls the Publisher from up to that
	// many goroutines per lane; 1 publishes one event at a time, in the
	// lane's order. Defaults to MaxInFlightDefault (64) for a Publisher
	// that is a ConcurrentPublisher saying so (every broker adapter's), and
	// to 1 for any other.
	MaxInFlight int
	// AckDeadline bounds the time one event may take to be published,
	// retries included, from when it is handed to the Publisher, before the
	// lane's batch is given up and read again from the first event not
	// confirmed (the event's attempt count is kept). While publishing keeps failing,
	// the lane then pauses between batches (exponential backoff up to
	// BackoffMax). Must be above BackoffInitial. Defaults to 5 seconds.
	AckDeadline time.Duration
	// MaxAttempts is the number of attempts for an event whose failure is
	// permanent (see Permanent) before it is dead-lettered. Attempts are
	// counted in the database (eventbus_attempts), across batches, relay
	// processes and restarts. Other failures are retried for as long as
	// they last. Defaults to 5: with the default backoff a permanent
	// failure is dead-lettered about 1.5 seconds (plus the broker's time
	// per attempt) after its first attempt.
	MaxAttempts int
	// BackoffInitial and BackoffMax bound the exponential backoff between
	// attempts to publish one event: BackoffInitial × 2^(n-1) after the
	// n-th failed attempt, at most BackoffMax, with ±50% jitter. Default to
	// 100 milliseconds and 10 seconds.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Retention is how long relayed rows stay in the outbox before the
	// cleaner deletes them; rows not yet acknowledged by every registered
	// relay group are never deleted.
	// Defaults to 24 hours. Negative disables the cleaner.
	Retention time.Duration
	// CleanInterval is how often the cleaner runs. Defaults to 1 minute.
	CleanInterval time.Duration
	// ShutdownTimeout bounds the wait for in-flight events when Run's
	// context ends. Defaults to 30 seconds.
	ShutdownTimeout time.Duration
	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Middlewares are extra Watermill handler middlewares, run inside the
	// relay's own (dead-lettering, retry) around each publish.
	Middlewares []message.HandlerMiddleware
}

func (c *RelayConfig) setDefaults() {
	c.ConsumerGroup = cmp.Or(c.ConsumerGroup, ConsumerGroupDefault)
	c.PollInterval = cmp.Or(c.PollInterval, PollIntervalDefault)
	c.RetryInterval = cmp.Or(c.RetryInterval, RetryIntervalDefault)
	c.BatchSize = cmp.Or(c.BatchSize, BatchSizeDefault)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1
		if p, ok := c.Publisher.(ConcurrentPublisher); ok && p.PublishesConcurrently() {
			c.MaxInFlight = MaxInFlightDefault
		}
	}
	c.AckDeadline = cmp.Or(c.AckDeadline, AckDeadlineDefault)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, MaxAttemptsDefault)
	c.BackoffInitial = cmp.Or(c.BackoffInitial, BackoffInitialDefault)
	c.BackoffMax = cmp.Or(c.BackoffMax, BackoffMaxDefault)
	c.Retention = cmp.Or(c.Retention, RetentionDefault)
	c.CleanInterval = cmp.Or(c.CleanInterval, CleanIntervalDefault)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, ShutdownTimeoutDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem of the configuration.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, errors.New("nil Pool"))
	}
	if c.Publisher == nil {
		errs = append(errs, errors.New("nil Publisher"))
	}
	for name, d := range map[string]time.Duration{
		"PollInterval": c.PollInterval, "RetryInterval": c.RetryInterval, "AckDeadline": c.AckDeadline,
		"BackoffInitial": c.BackoffInitial, "BackoffMax": c.BackoffMax, "CleanInterval": c.CleanInterval,
		"ShutdownTimeout": c.ShutdownTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("negative %s %s", name, d))
		}
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("negative BatchSize %d", c.BatchSize))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("negative MaxInFlight %d", c.MaxInFlight))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("negative MaxAttempts %d", c.MaxAttempts))
	}
	if strings.Contains(c.ConsumerGroup, "/") || len(c.ConsumerGroup) > maxConsumerGroupLen {
		errs = append(errs, fmt.Errorf("ConsumerGroup %q: want at most %d bytes and no '/' (lanes are tracked as <group>/<lane>)", c.ConsumerGroup, maxConsumerGroupLen))
	}
	if c.AckDeadline > 0 && c.AckDeadline <= cmp.Or(c.BackoffInitial, BackoffInitialDefault) {
		errs = append(errs, fmt.Errorf("AckDeadline %s not above BackoffInitial %s: no attempt could be retried within a batch", c.AckDeadline, cmp.Or(c.BackoffInitial, BackoffInitialDefault)))
	}
	if c.BackoffMax > 0 && c.BackoffInitial > c.BackoffMax {
		errs = append(errs, fmt.Errorf("BackoffInitial %s above BackoffMax %s", c.BackoffInitial, c.BackoffMax))
	}
	for _, l := range c.Lanes {
		if l < 0 || l >= schema.LanesMax {
			errs = append(errs, fmt.Errorf("lane %d out of range", l))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bus: invalid relay config: %w", err)
	}
	return nil
}

// Relay moves events from the outbox to a broker: for every lane, a
// watermill-sql subscriber reads the lane table and Watermill's forwarder
// unwraps each row and publishes it, with up to MaxInFlight events of the
// lane in flight and at most one per aggregate. Several relay processes
// with the same ConsumerGroup may run against one database: each lane is
// relayed by one of them at a time, every aggregate in commit order.
//
// Delivery is at least once: an event is acknowledged in the outbox only
// after the broker accepted it and every event before it in its lane, so
// a crash between the two publishes it again.
type Relay struct {
	cfg    RelayConfig
	logger watermill.LoggerAdapter
	q      *db.Queries

	published, failed, deadLettered atomic.Int64
	cleaner                         cleanerState // cleaner.go
}

// RelayStats counts what a relay did since it was made.
type RelayStats struct {
	// Published counts events the broker accepted (redeliveries included).
	Published int64
	// Failed counts failed attempts to publish.
	Failed int64
	// DeadLettered counts events moved to the dead-letter table.
	DeadLettered int64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Failed: r.failed.Load(), DeadLettered: r.deadLettered.Load()}
}

// NewRelay validates cfg and returns a Relay; Run starts it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Relay{cfg: cfg, logger: newWatermillLogger(cfg.Logger), q: db.New()}, nil
}

// LaneConsumerGroup is the watermill-sql consumer group under which a relay
// of group records its progress in lane.
func LaneConsumerGroup(group string, lane int) string { return group + "/" + strconv.Itoa(lane) }

// Run relays until ctx ends, then stops reading, waits for in-flight events
// (at most ShutdownTimeout) and returns. An event being published when Run
// returns is not acknowledged, so it is published again later. Run returns
// nil after a clean stop.
func (r *Relay) Run(ctx context.Context) error {
	n, err := schema.Lanes(ctx, r.cfg.Pool)
	if err != nil {
		return fmt.Errorf("bus: relay: %w", err)
	}
	lanes := slices.Clone(r.cfg.Lanes)
	for _, l := range lanes {
		if l >= n {
			return fmt.Errorf("bus: relay: lane %d does not exist: the database has %d lanes", l, n)
		}
	}
	if len(lanes) == 0 {
		for i := range n {
			lanes = append(lanes, i)
		}
	}
	// Registered groups keep the cleaner from deleting what they have not
	// relayed, and Migrate from growing the lanes over their backlog.
	if err := r.registerGroup(ctx); err != nil {
		return err
	}
	follow := len(r.cfg.Lanes) == 0 // all lanes, including lanes added later
	poolCfg := r.cfg.Pool.Config().Copy()
	// Each lane holds a connection while it relays a batch, and may need a
	// second one meanwhile to record a failed attempt or a dead letter.
	// Connections are opened on demand, so a relay that follows the lane
	// count can afford a bound that fits every lane there could be.
	poolCfg.MaxConns = int32(2*len(lanes) + minPoolConnsBesidesLanes)
	if follow {
		poolCfg.MaxConns = int32(2*schema.LanesMax + minPoolConnsBesidesLanes)
	}
	poolCfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("bus: relay: open pool: %w", err)
	}
	defer pool.Close()
	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()

	// runCtx outlives ctx while the lanes drain: on ctx's end, lanes stop
	// reading new batches and finish (and acknowledge) the ones in flight.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	draining := make(chan struct{})
	g, gctx := errgroup.WithContext(runCtx)
	set := &laneSet{wakers: map[string]*laneWaker{}, lanesChanged: make(chan struct{}, 1)}

	// startLane starts relaying lane; the caller holds set.mu.
	startLane := func(lane int) error {
		w := newLaneWaker(runCtx, draining, r.cfg.PollInterval, r.cfg.RetryInterval, r.cfg.BackoffInitial, r.cfg.BackoffMax)
		f, err := r.newLaneForwarder(pool, sqlDB, lane, w)
		if err != nil {
			return err
		}
		set.wakers[laneTable(lane)] = w
		set.lanes = append(set.lanes, lane)
		g.Go(func() error {
			if err := f.Run(gctx); err != nil && gctx.Err() == nil {
				return fmt.Errorf("bus: relay: lane %d forwarder: %w", lane, err)
			}
			return nil
		})
		w.kick() // there may be a backlog from before the start
		return nil
	}

	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-gctx.Done():
			stop() // a forwarder failed: release the lanes' wakers too
			return nil
		}
		set.mu.Lock()
		set.draining = true
		close(draining)
		wakers := slices.Collect(maps.Values(set.wakers))
		set.mu.Unlock()
		r.awaitIdle(wakers)
		stop()
		return nil
	})
	notify := !r.cfg.DisableNotify
	if notify {
		if notify, err = schema.Notify(ctx, r.cfg.Pool); err != nil {
			return fmt.Errorf("bus: relay: %w", err)
		}
		if !notify {
			r.logger.Info("The outbox does not NOTIFY (schema.WakeupPoll): polling only", watermill.LogFields{"poll_interval": r.cfg.PollInterval})
		}
	}
	if notify {
		ready := make(chan struct{})
		g.Go(func() error { listen(gctx, pool, set, r.logger, ready); return nil })
		select {
		case <-ready:
		case <-gctx.Done():
		}
	}
	set.mu.Lock()
	for _, lane := range lanes {
		if err := startLane(lane); err != nil {
			set.mu.Unlock()
			stop()
			_ = g.Wait()
			return err
		}
	}
	set.mu.Unlock()
	if follow {
		g.Go(func() error { r.followLanes(gctx, pool, set, startLane); return nil })
	}
	if r.cfg.Retention > 0 {
		g.Go(func() error { r.clean(gctx, pool); return nil })
	}
	return g.Wait()
}

// laneSet is the lanes a relay runs, which grows when Migrate adds lanes.
type laneSet struct {
	mu       sync.Mutex
	wakers   map[string]*laneWaker // by lane table name, as NOTIFY names them
	lanes    []int
	draining bool
	// lanesChanged is signalled when Migrate announces new lanes.
	lanesChanged chan struct{}
}

// waker returns the waker of a lane table, or nil.
func (s *laneSet) waker(table string) *laneWaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wakers[table]
}

// kickAll wakes every lane.
func (s *laneSet) kickAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.wakers {
		w.kick()
	}
}

// laneTable is the name of a lane's table, as its NOTIFY names it.
func laneTable(lane int) string { return "watermill_" + schema.LaneTopic(lane) }

// lanesCheckInterval is how often a relay that follows the lane count
// reads it, besides Migrate's notification.
const lanesCheckInterval = 5 * time.Second

// followLanes starts the lanes Migrate adds while the relay runs: on
// Migrate's notification, and every lanesCheckInterval in case it was
// missed (or the relay polls only).
func (r *Relay) followLanes(ctx context.Context, pool *pgxpool.Pool, set *laneSet, startLane func(int) error) {
	t := time.NewTicker(lanesCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-set.lanesChanged:
		}
		n, err := schema.Lanes(ctx, pool)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Error("Reading the number of lanes", err, nil)
			}
			continue
		}
		set.mu.Lock()
		for lane := len(set.lanes); lane < n && !set.draining; lane++ {
			if err := startLane(lane); err != nil {
				r.logger.Error("Starting a new lane", err, watermill.LogFields{"lane": lane})
				break
			}
			r.logger.Info("Relaying a new lane", watermill.LogFields{"lane": lane})
		}
		set.mu.Unlock()
	}
}

// awaitIdle waits until every lane finished its batch in flight, at most
// ShutdownTimeout.
func (r *Relay) awaitIdle(wakers []*laneWaker) {
	timeout := time.NewTimer(r.cfg.ShutdownTimeout)
	defer timeout.Stop()
	for _, w := range wakers {
		select {
		case <-w.idle:
		case <-timeout.C:
			r.logger.Error("Shutdown timeout: leaving in-flight events unacknowledged, they will be relayed again",
				errors.New("shutdown timeout"), watermill.LogFields{"timeout": r.cfg.ShutdownTimeout})
			return
		}
	}
}

func (r *Relay) newLaneForwarder(pool *pgxpool.Pool, sqlDB *sql.DB, lane int, waker *laneWaker) (*forwarder.Forwarder, error) {
	topic := schema.LaneTopic(lane)
	logger := r.logger.With(watermill.LogFields{"lane": lane})
	ackDeadline := r.cfg.AckDeadline
	pipeline := newLanePipeline(nil, r.cfg.MaxInFlight, ackDeadline, logger)
	sub, err := wsql.NewSubscriber(sqlDB, wsql.SubscriberConfig{
		ConsumerGroup:  LaneConsumerGroup(r.cfg.ConsumerGroup, lane),
		AckDeadline:    &ackDeadline,
		PollInterval:   r.cfg.PollInterval,
		ResendInterval: r.cfg.BackoffInitial,
		RetryInterval:  r.cfg.RetryInterval,
		BackoffManager: waker,
		SchemaAdapter: laneSchema{
			KeysetSchema: KeysetSchema{wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: r.cfg.BatchSize}},
			busy:         waker.laneBusy,
			pipeline:     pipeline,
		},
		OffsetsAdapter: laneOffsets{pipeline: pipeline},
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("bus: relay: lane %d subscriber: %w", lane, err)
	}
	pipeline.sub = sub
	poison, err := middleware.PoisonQueueWithFilter(&deadLetterSink{pool: pool, q: r.q, logger: logger, count: &r.deadLettered}, deadLetterTopic, IsPermanent)
	if err != nil {
		return nil, fmt.Errorf("bus: relay: %w", err)
	}
	attempts := publishAttempts{relay: r, pool: pool, lane: lane, waker: waker, logger: logger}
	mws := []message.HandlerMiddleware{pipeline.middleware, poison, attempts.middleware}
	mws = append(mws, r.cfg.Middlewares...)
	mws = append(mws, validateOutboxRow)
	return forwarder.NewForwarder(pipeline, r.cfg.Publisher, logger, forwarder.Config{
		ForwarderTopic: topic,
		Middlewares:    mws,
		CloseTimeout:   r.cfg.ShutdownTimeout,
	})
}

// validateOutboxRow turns the failure to forward a row that is no
// forwarder envelope into a permanent one, with a readable error. It
// decodes the row only after a failure: the forwarder decodes it anyway.
func validateOutboxRow(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			if _, _, unwrapErr := UnwrapOutboxPayload(msg.Payload); unwrapErr != nil {
				return nil, Permanent(unwrapErr)
			}
		}
		return out, err
	}
}

// deadLetterSink is the Watermill publisher behind the poison-queue
// middleware: it stores each poisoned outbox row in eventbus_dead_letters.
type deadLetterSink struct {
	pool   *pgxpool.Pool
	q      *db.Queries
	logger watermill.LoggerAdapter
	count  *atomic.Int64
}

// Publish implements message.Publisher.
func (s *deadLetterSink) Publish(_ string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		laneTopic := msg.Metadata.Get(middleware.PoisonedTopicKey)
		lane, err := laneOfTopic(laneTopic)
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", msg.UUID, err)
		}
		attempts, _ := strconv.Atoi(msg.Metadata.Get(metadataAttempts))
		first, err := time.Parse(time.RFC3339Nano, msg.Metadata.Get(metadataFirstFailedAt))
		if err != nil {
			first = time.Now()
		}
		meta := make(map[string]string, len(msg.Metadata))
		for k, v := range msg.Metadata {
			switch k {
			case metadataAttempts, metadataFirstFailedAt, middleware.ReasonForPoisonedKey,
				middleware.PoisonedTopicKey, middleware.PoisonedHandlerKey, middleware.PoisonedSubscriberKey:
			default:
				meta[k] = v
			}
		}
		metaJSON, err := marshalMetadata(meta)
		if err != nil {
			return err
		}
		ctx := msg.Context()
		if ctx.Err() != nil {
			ctx = context.Background()
		}
		var id int64
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			id, err = s.q.InsertDeadLetter(ctx, tx, db.InsertDeadLetterParams{
				Lane:          int32(lane),
				MessageUuid:   msg.UUID,
				EventName:     msg.Metadata.Get(MetadataName),
				AggregateID:   msg.Metadata.Get(MetadataAggregateID),
				Payload:       msg.Payload,
				Metadata:      metaJSON,
				Error:         msg.Metadata.Get(middleware.ReasonForPoisonedKey),
				Attempts:      int32(attempts),
				FirstFailedAt: pgtype.Timestamptz{Time: first, Valid: true},
			})
			if err != nil {
				return err
			}
			return s.q.DeleteAttempts(ctx, tx, db.DeleteAttemptsParams{Lane: int32(lane), MessageUuid: msg.UUID})
		})
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", msg.UUID, err)
		}
		s.count.Add(1)
		s.logger.Error("Event dead-lettered", errors.New(msg.Metadata.Get(middleware.ReasonForPoisonedKey)), watermill.LogFields{
			"dead_letter_id": id, "uuid": msg.UUID, "event_name": msg.Metadata.Get(MetadataName), "attempts": attempts,
		})
	}
	return nil
}

// Close implements message.Publisher.
func (s *deadLetterSink) Close() error { return nil }

// laneOfTopic is the inverse of schema.LaneTopic.
func laneOfTopic(topic string) (int, error) {
	n, ok := strings.CutPrefix(topic, schema.LaneTopicPrefix)
	lane, err := strconv.Atoi(n)
	if !ok || err != nil || lane < 0 {
		return 0, fmt.Errorf("topic %q is no outbox lane", topic)
	}
	return lane, nil
}
