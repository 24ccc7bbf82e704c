package observe

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/edupulse/eventbus/bus"
)

// instrumentationName names the tracer of this package.
const instrumentationName = "github.com/edupulse/eventbus/bus/observe"

// PublishBuckets are the buckets of the publish and handling latency
// histograms, in seconds: 0.5 milliseconds to about 16 seconds.
var PublishBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)

// RelayMetrics records what a relay publishes. Put its Middleware in
// bus.RelayConfig.Middlewares; one RelayMetrics may serve several relays
// of a process.
type RelayMetrics struct {
	duration  *prometheus.HistogramVec
	published *prometheus.CounterVec
	errors    *prometheus.CounterVec
}

// NewRelayMetrics registers the relay's metrics on reg:
// eventbus_relay_publish_duration_seconds{lane} (every attempt),
// eventbus_relay_published_total{lane} and
// eventbus_relay_publish_errors_total{lane,permanent}.
func NewRelayMetrics(reg prometheus.Registerer) (*RelayMetrics, error) {
	m := &RelayMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventbus_relay_publish_duration_seconds",
			Help:    "Time the relay took to publish one outbox event to the broker, per attempt, failed attempts included.",
			Buckets: PublishBuckets,
		}, []string{"lane"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventbus_relay_published_total",
			Help: "Outbox events the relay published to the broker.",
		}, []string{"lane"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventbus_relay_publish_errors_total",
			Help: "Failed attempts to publish an outbox event; permanent=\"true\" for failures that end in the dead-letter table after the relay's MaxAttempts, \"false\" for outages, retried until they end.",
		}, []string{"lane", "permanent"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.published, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("observe: register relay metrics: %w", err)
		}
	}
	return m, nil
}

// Middleware is a Watermill handler middleware for
// bus.RelayConfig.Middlewares. It runs once per publish attempt.
func (m *RelayMetrics) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		lane := laneOf(msg.Context())
		start := time.Now()
		out, err := h(msg)
		m.duration.WithLabelValues(lane).Observe(time.Since(start).Seconds())
		if err != nil {
			m.errors.WithLabelValues(lane, strconv.FormatBool(bus.IsPermanent(err))).Inc()
		} else {
			m.published.WithLabelValues(lane).Inc()
		}
		return out, err
	}
}

// laneOf returns the lane number of the outbox lane a relay handler reads,
// from the Watermill subscribe topic ("eventbus_lane_3" gives "3").
func laneOf(ctx context.Context) string {
	topic := message.SubscribeTopicFromCtx(ctx)
	if lane, ok := strings.CutPrefix(topic, "eventbus_lane_"); ok {
		return lane
	}
	if topic == "" {
		return "unknown"
	}
	return topic
}

// RelayTracing returns a middleware for bus.RelayConfig.Middlewares that
// wraps each publish attempt in a PRODUCER span "eventbus relay <event
// name>", made by tp (nil means otel.GetTracerProvider()). The span starts
// a trace of its own, linked to the producer's span read from the outbox
// row's traceparent: the relay runs long after, and apart from, the
// request that wrote the event. The forwarded message keeps the producer's
// traceparent, so consumers continue the producer's trace. The span is
// also put in the message's context, where the broker's publisher sees it.
func RelayTracing(tp trace.TracerProvider) message.HandlerMiddleware {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tracer := tp.Tracer(instrumentationName)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			name := msg.Metadata.Get(bus.MetadataName)
			spanName := "eventbus relay " + name
			if name == "" {
				spanName = "eventbus relay"
			}
			opts := []trace.SpanStartOption{
				trace.WithNewRoot(),
				trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(
					attribute.String("messaging.operation.type", "send"),
					attribute.String("messaging.operation.name", "relay"),
					attribute.String("messaging.message.id", msg.UUID),
					attribute.String("eventbus.event.name", name),
					attribute.String("eventbus.aggregate.id", msg.Metadata.Get(bus.MetadataAggregateID)),
					attribute.String("eventbus.lane", laneOf(msg.Context())),
				),
			}
			producer := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(msg.Metadata)))
			if producer.IsValid() {
				opts = append(opts, trace.WithLinks(trace.Link{
					SpanContext: producer,
					Attributes:  []attribute.KeyValue{attribute.String("eventbus.link", "producer")},
				}))
			}
			parent := msg.Context()
			ctx, span := tracer.Start(parent, spanName, opts...)
			defer span.End()
			msg.SetContext(ctx)
			out, err := h(msg)
			msg.SetContext(parent)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				span.SetAttributes(attribute.Bool("eventbus.error.permanent", bus.IsPermanent(err)))
			}
			return out, err
		}
	}
}
