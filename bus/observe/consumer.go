package observe

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edupulse/eventbus/bus"
)

// ConsumerMetrics exports consumers' counters (bus.Consumer.Stats) and
// records handling latency. One ConsumerMetrics serves every consumer of a
// process: Watch each of them, and put Middleware(group) in their
// bus.ConsumerConfig.Middlewares.
type ConsumerMetrics struct {
	duration *prometheus.HistogramVec

	mu       sync.Mutex
	watched  map[string]*bus.Consumer
	handled  *prometheus.Desc
	failed   *prometheus.Desc
	dups     *prometheus.Desc
	deadDesc *prometheus.Desc
	outages  *prometheus.Desc
	later    *prometheus.Desc
	skipped  *prometheus.Desc
}

// NewConsumerMetrics registers the consumer metrics on reg:
// eventbus_consumer_{handled,failed,duplicates,dead_lettered,outage_retries,postponed,skipped}_total
// {consumer_group}, read from the watched consumers' Stats at scrape time,
// and eventbus_consumer_handle_duration_seconds{consumer_group,topic},
// recorded by Middleware.
func NewConsumerMetrics(reg prometheus.Registerer) (*ConsumerMetrics, error) {
	labels := []string{"consumer_group"}
	m := &ConsumerMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventbus_consumer_handle_duration_seconds",
			Help:    "Time the consumer's handlers took for one message, per attempt, failed attempts included.",
			Buckets: PublishBuckets,
		}, []string{"consumer_group", "topic"}),
		watched: map[string]*bus.Consumer{},
		handled: prometheus.NewDesc("eventbus_consumer_handled_total",
			"Messages whose handlers all succeeded, duplicates skipped by the inbox included.", labels, nil),
		failed: prometheus.NewDesc("eventbus_consumer_failed_total",
			"Failed handler attempts (each retry counts).", labels, nil),
		dups: prometheus.NewDesc("eventbus_consumer_duplicates_total",
			"Redelivered messages the inbox recognised as already handled, and skipped.", labels, nil),
		deadDesc: prometheus.NewDesc("eventbus_consumer_dead_lettered_total",
			"Messages dead-lettered (stored in PostgreSQL or published to the dead-letter topic): undecodable, or whose handlers kept failing.", labels, nil),
		outages: prometheus.NewDesc("eventbus_consumer_outage_retries_total",
			"Failed attempts taken for an outage (the inbox database unreachable) and retried without counting against MaxRetries; also in failed_total.", labels, nil),
		later: prometheus.NewDesc("eventbus_consumer_postponed_total",
			"Deliveries of events without a handler nacked for redelivery (UnknownVersionRetry).", labels, nil),
		skipped: prometheus.NewDesc("eventbus_consumer_skipped_total",
			"Events without a handler acked unhandled (UnknownVersionSkip).", labels, nil),
	}
	if err := reg.Register(m.duration); err != nil {
		return nil, fmt.Errorf("observe: register consumer metrics: %w", err)
	}
	if err := reg.Register(statsCollector{m}); err != nil {
		return nil, fmt.Errorf("observe: register consumer metrics: %w", err)
	}
	return m, nil
}

// Watch exports c's counters under consumer_group="group". It refuses a
// group watched already.
func (m *ConsumerMetrics) Watch(group string, c *bus.Consumer) error {
	if c == nil {
		return fmt.Errorf("observe: watch consumer %q: nil consumer", group)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.watched[group]; dup {
		return fmt.Errorf("observe: consumer group %q watched twice", group)
	}
	m.watched[group] = c
	return nil
}

// Middleware returns a middleware for the bus.ConsumerConfig.Middlewares
// of the consumer of group, recording the handling time of every attempt.
func (m *ConsumerMetrics) Middleware(group string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			topic := message.SubscribeTopicFromCtx(msg.Context())
			if topic == "" {
				// Fall back on the handler name, group + "/" + topic.
				topic = strings.TrimPrefix(message.HandlerNameFromCtx(msg.Context()), group+"/")
			}
			start := time.Now()
			out, err := h(msg)
			m.duration.WithLabelValues(group, topic).Observe(time.Since(start).Seconds())
			return out, err
		}
	}
}

// statsCollector reads the watched consumers' Stats at scrape time.
type statsCollector struct{ m *ConsumerMetrics }

func (s statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.m.handled
	ch <- s.m.failed
	ch <- s.m.dups
	ch <- s.m.deadDesc
	ch <- s.m.outages
	ch <- s.m.later
	ch <- s.m.skipped
}

func (s statsCollector) Collect(ch chan<- prometheus.Metric) {
	s.m.mu.Lock()
	groups := make([]string, 0, len(s.m.watched))
	for g := range s.m.watched {
		groups = append(groups, g)
	}
	consumers := make(map[string]*bus.Consumer, len(groups))
	for g, c := range s.m.watched {
		consumers[g] = c
	}
	s.m.mu.Unlock()
	slices.Sort(groups)
	for _, g := range groups {
		st := consumers[g].Stats()
		ch <- prometheus.MustNewConstMetric(s.m.handled, prometheus.CounterValue, float64(st.Handled), g)
		ch <- prometheus.MustNewConstMetric(s.m.failed, prometheus.CounterValue, float64(st.Failed), g)
		ch <- prometheus.MustNewConstMetric(s.m.dups, prometheus.CounterValue, float64(st.Duplicates), g)
		ch <- prometheus.MustNewConstMetric(s.m.deadDesc, prometheus.CounterValue, float64(st.DeadLettered), g)
		ch <- prometheus.MustNewConstMetric(s.m.outages, prometheus.CounterValue, float64(st.OutageRetries), g)
		ch <- prometheus.MustNewConstMetric(s.m.later, prometheus.CounterValue, float64(st.Postponed), g)
		ch <- prometheus.MustNewConstMetric(s.m.skipped, prometheus.CounterValue, float64(st.Skipped), g)
	}
}
