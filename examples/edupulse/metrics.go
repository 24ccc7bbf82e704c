package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
)

// serveMetrics serves Prometheus metrics on cfg.MetricsAddr: the outbox
// status read from the database, the relay's publish metrics (through the
// returned relay middleware) and the consumers' counters.
func serveMetrics(ctx context.Context, cfg config, stderr io.Writer, pool *pgxpool.Pool, consumers map[string]*bus.Consumer) (message.HandlerMiddleware, func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err != nil {
		return nil, nil, err
	}
	relayMetrics, err := observe.NewRelayMetrics(reg)
	if err != nil {
		return nil, nil, err
	}
	consumerMetrics, err := observe.NewConsumerMetrics(reg)
	if err != nil {
		return nil, nil, err
	}
	for group, c := range consumers {
		if err := consumerMetrics.Watch(group, c); err != nil {
			return nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	url := "http://" + ln.Addr().String() + "/metrics"
	fmt.Fprintf(stderr, "edupulse: metrics on %s\n", url)
	if cfg.onMetrics != nil {
		cfg.onMetrics(url)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(stderr, "edupulse: metrics server:", err)
		}
	}()
	stop := func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}
	return relayMetrics.Middleware, stop, nil
}
