package observe_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
)

// A relay process serving /metrics: the outbox status read at scrape time
// and the relay's publish latency and errors, on a registry of its own.
func Example_relayProcess() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	b, err := broker.Open(ctx, os.Getenv(broker.EnvBroker), broker.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err != nil {
		log.Fatal(err)
	}
	relayMetrics, err := observe.NewRelayMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		log.Fatal(http.ListenAndServe(":9090", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	}()

	relay, err := bus.NewRelay(bus.RelayConfig{
		Pool:      pool,
		Publisher: b.Publisher(),
		Middlewares: []message.HandlerMiddleware{
			relayMetrics.Middleware,
			observe.RelayTracing(nil), // the global OpenTelemetry provider
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// A consumer's counters and handling latency, exported under its group.
func ExampleNewConsumerMetrics() {
	ctx := context.Background()
	var (
		pool *pgxpool.Pool // the application's database
		b    broker.Broker // from broker.Open
	)
	reg := prometheus.NewRegistry()
	metrics, err := observe.NewConsumerMetrics(reg)
	if err != nil {
		log.Fatal(err)
	}
	sub, err := b.Subscriber("badges")
	if err != nil {
		log.Fatal(err)
	}
	c, err := bus.NewConsumer(bus.ConsumerConfig{
		Registry: gen.Registry(), Subscriber: sub, Group: "badges", DeadLetter: b.Publisher(), Pool: pool,
		Middlewares: []message.HandlerMiddleware{metrics.Middleware("badges")},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := metrics.Watch("badges", c); err != nil {
		log.Fatal(err)
	}
	_ = c.Run(ctx)
}

// ReadStatus is what `eventbus status` and the status collector show.
func ExampleReadStatus() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	st, err := observe.ReadStatus(ctx, pool, bus.ConsumerGroupDefault)
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range st.Lanes {
		fmt.Printf("lane %d: %d pending, oldest %s\n", l.Lane, l.Backlog, l.OldestPending)
	}
	fmt.Println("dead letters:", st.DeadLetters)
}

// The relay's span for an event is a PRODUCER span of its own trace,
// linked to the span that published the event. Here the relay's handler
// is called by hand on the message the outbox stores.
func ExampleRelayTracing() {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	// The producer publishes an event inside its span: the message carries
	// the span's traceparent.
	ctx, producer := tp.Tracer("api").Start(context.Background(), "POST /pulses")
	ev := gen.NewPulseCreated(uuid.New(), uuid.New(), "Fractions", time.Now())
	msg, err := gen.Registry().NewMessage(ctx, ev)
	if err != nil {
		log.Fatal(err)
	}
	producer.End()

	publish := func(*message.Message) ([]*message.Message, error) { return nil, nil }
	if _, err := observe.RelayTracing(tp)(publish)(msg); err != nil {
		log.Fatal(err)
	}

	for _, s := range exp.GetSpans() {
		linked := len(s.Links) == 1 && s.Links[0].SpanContext.SpanID() == producer.SpanContext().SpanID()
		fmt.Printf("%s (%s) linked to the producer: %t, same trace: %t\n", s.Name, s.SpanKind,
			linked, s.SpanContext.TraceID() == producer.SpanContext().TraceID())
	}
	// Output:
	// POST /pulses (internal) linked to the producer: false, same trace: true
	// eventbus relay edupulse.pulse.created (producer) linked to the producer: true, same trace: false
}
