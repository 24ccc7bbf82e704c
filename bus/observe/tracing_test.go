package observe_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
)

// TestTraceFromProducerThroughRelayToConsumer: producer span → outbox →
// relay (RelayTracing) → GoChannel → consumer. The consumer's span continues
// the producer's trace as its child; the relay's span is in a trace of its
// own, linked to the producer's span.
func TestTraceFromProducerThroughRelayToConsumer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	pool, ob := newOutboxDB(t, 2)
	gc := newGoChannel(t)
	c, err := bus.NewConsumer(bus.ConsumerConfig{
		Registry: gen.Registry(), Subscriber: noClose{gc}, Group: "tracing", DeadLetter: gc,
		TracerProvider: tp, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan trace.SpanContext, 1)
	bus.On(c, func(ctx context.Context, ev gen.PulseCreated) error {
		seen <- trace.SpanContextFromContext(ctx)
		return nil
	})
	stopConsumer := startConsumer(t, c)
	stopRelay := startRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc,
		Middlewares: []message.HandlerMiddleware{observe.RelayTracing(tp)}})

	pctx, producerSpan := tp.Tracer("edupulse-api").Start(ctx, "POST /pulses", trace.WithSpanKind(trace.SpanKindServer))
	publish(t, pctx, pool, ob, pulseCreated("traced"))
	producerSpan.End()
	producer := producerSpan.SpanContext()

	var inHandler trace.SpanContext
	select {
	case inHandler = <-seen:
	case <-time.After(30 * time.Second):
		t.Fatal("the event was not consumed within 30s")
	}
	if inHandler.TraceID() != producer.TraceID() {
		t.Errorf("handler's trace %s, want the producer's %s", inHandler.TraceID(), producer.TraceID())
	}
	stopRelay()
	stopConsumer()

	var relaySpan, consumerSpan *tracetest.SpanStub
	spans := exp.GetSpans()
	for i, s := range spans {
		switch s.Name {
		case "eventbus relay edupulse.pulse.created":
			relaySpan = &spans[i]
		case "eventbus consume edupulse.pulse.created":
			consumerSpan = &spans[i]
		}
	}
	if relaySpan == nil || consumerSpan == nil {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("spans %q: want a relay and a consumer span", names)
	}

	// The consumer continues the producer's trace, as its child.
	if consumerSpan.SpanContext.TraceID() != producer.TraceID() {
		t.Errorf("consumer span trace %s, want the producer's %s", consumerSpan.SpanContext.TraceID(), producer.TraceID())
	}
	if consumerSpan.Parent.SpanID() != producer.SpanID() {
		t.Errorf("consumer span parent %s, want the producer span %s", consumerSpan.Parent.SpanID(), producer.SpanID())
	}
	if consumerSpan.SpanKind != trace.SpanKindConsumer {
		t.Errorf("consumer span kind %s, want consumer", consumerSpan.SpanKind)
	}

	// The relay's span is a PRODUCER span of its own trace, linked to the
	// producer's span.
	if relaySpan.SpanKind != trace.SpanKindProducer {
		t.Errorf("relay span kind %s, want producer", relaySpan.SpanKind)
	}
	if relaySpan.Parent.IsValid() {
		t.Errorf("relay span has parent %s, want a root span", relaySpan.Parent.SpanID())
	}
	if relaySpan.SpanContext.TraceID() == producer.TraceID() {
		t.Errorf("relay span in the producer's trace, want a trace of its own with a link")
	}
	if len(relaySpan.Links) != 1 || relaySpan.Links[0].SpanContext.SpanID() != producer.SpanID() ||
		relaySpan.Links[0].SpanContext.TraceID() != producer.TraceID() {
		t.Errorf("relay span links %+v, want one link to the producer span %s", relaySpan.Links, producer.SpanID())
	}
	attrs := map[string]string{}
	for _, kv := range relaySpan.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["eventbus.event.name"] != "edupulse.pulse.created" || attrs["messaging.message.id"] == "" || attrs["eventbus.lane"] == "" {
		t.Errorf("relay span attributes %v", attrs)
	}
}
