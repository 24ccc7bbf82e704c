// Package observe makes an eventbus application watchable: Prometheus
// metrics for the outbox, the relay and the consumers, and OpenTelemetry
// tracing of the relay.
//
// Nothing here touches a global registry or provider: every constructor
// takes the prometheus.Registerer or trace.TracerProvider to use.
//
// # Metrics
//
// RegisterStatus registers a collector that queries the database at
// scrape time (see ReadStatus):
//
//	eventbus_outbox_backlog{lane}                      events not yet relayed
//	eventbus_outbox_oldest_pending_age_seconds{lane}   age of the oldest of them
//	eventbus_outbox_rows{lane}                         rows stored, relayed or not
//	eventbus_outbox_rows_estimated{lane}               1 if that is the planner's estimate
//	eventbus_dead_letters                              relay dead letters not replayed
//	eventbus_consumer_dead_letters                     consumer dead letters not replayed
//	eventbus_inbox_rows{consumer_group}                inbox rows
//	eventbus_inbox_rows_estimated{consumer_group}      1 if that is the planner's estimate
//	eventbus_status_up                                 1 if the queries succeeded
//
// A scrape costs in proportion to the backlog, not to the rows stored: the
// backlog is counted along each lane's primary key from the relay's
// position, and the rows stored in tables above ExactCountMaxBytes (1 MiB)
// are PostgreSQL's planner estimates, marked by the _estimated gauges.
//
// NewRelayMetrics returns a middleware for bus.RelayConfig.Middlewares:
//
//	eventbus_relay_publish_duration_seconds{lane}      histogram, per attempt
//	eventbus_relay_published_total{lane}               events published
//	eventbus_relay_publish_errors_total{lane,permanent} failed attempts
//
// NewConsumerMetrics exports each watched consumer's bus.ConsumerStats and
// gives a middleware for bus.ConsumerConfig.Middlewares:
//
//	eventbus_consumer_handled_total{consumer_group}
//	eventbus_consumer_failed_total{consumer_group}
//	eventbus_consumer_duplicates_total{consumer_group}
//	eventbus_consumer_dead_lettered_total{consumer_group}
//	eventbus_consumer_handle_duration_seconds{consumer_group,topic}
//
// # Tracing
//
// A producer's span context travels with each event as its W3C
// traceparent (bus.MetadataTraceParent), written into the outbox row by
// bus.Outbox.Publish. RelayTracing starts, for every publish attempt of the
// relay, a PRODUCER span "eventbus relay <event name>" in a trace of its
// own, linked to the producer's span; the forwarded message keeps the
// producer's traceparent, so the consumer's span (bus.Consumer starts one)
// is a child of the producer's span, in the producer's trace:
//
//	trace A: [HTTP request] ── [producer span] ── [eventbus consume edupulse.pulse.created]
//	trace B: [eventbus relay edupulse.pulse.created] ┄┄link┄┄> producer span
package observe
