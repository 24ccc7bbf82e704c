package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/schema"
)

// relayOptions are the flags of relay.
type relayOptions struct {
	brokerURL    string
	lanes        string
	metricsAddr  string
	pollInterval time.Duration
	maxAttempts  int
	retention    time.Duration
	logLevel     string
	// allowInProcess lets relay publish to an in-process broker, which
	// nothing outside the process can read.
	allowInProcess bool
}

// inProcessSchemes are the broker schemes whose broker lives in the
// process that opens it: a relay command publishing there acknowledges
// every event to nobody.
var inProcessSchemes = []string{"gochannel"}

// checkInProcess refuses an in-process broker unless allowed; allowed, it
// returns a warning to log.
func checkInProcess(cmd, rawURL string, allowed bool) (warning string, err error) {
	u, perr := url.Parse(rawURL)
	if perr != nil || !slices.Contains(inProcessSchemes, u.Scheme) {
		return "", nil
	}
	if !allowed {
		return "", usagef("%s: %s is an in-process broker: nothing outside this process can subscribe to it, so every event "+
			"would be acknowledged and dropped; pass --allow-in-process to do that on purpose (to empty an outbox, in tests)", cmd, broker.Redact(rawURL))
	}
	return "In-process broker: the events are acknowledged and dropped, nothing outside this process receives them", nil
}

func (a *app) relayFlags(fs *flag.FlagSet) {
	o := &a.relayOpts
	fs.StringVar(&o.brokerURL, "broker", "", "broker `URL`, such as nats://127.0.0.1:4222 (default $"+broker.EnvBroker+"); schemes: "+strings.Join(broker.Schemes(), ", "))
	fs.StringVar(&a.group, "relay-group", bus.ConsumerGroupDefault, "relay `group`: relay processes of one group share the lanes; each group relays every event")
	a.deprecatedGroupFlag(fs, "relay-group", &a.group)
	fs.StringVar(&o.lanes, "lanes", "", "relay only these `lanes`, comma-separated (default: all)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`ADDR`/metrics, such as :9090 (default: off)")
	fs.DurationVar(&o.pollInterval, "poll-interval", bus.PollIntervalDefault, "how often an idle lane is polled besides NOTIFY wake-ups")
	fs.IntVar(&o.maxAttempts, "max-attempts", bus.MaxAttemptsDefault, "attempts of an event failing permanently before it is dead-lettered")
	fs.DurationVar(&o.retention, "retention", bus.RetentionDefault, "how long relayed rows stay in the outbox; negative keeps them")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.BoolVar(&o.allowInProcess, "allow-in-process", false, "allow an in-process broker (gochannel://): the events are acknowledged and dropped")
}

func parseLanes(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var lanes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n >= schema.LanesMax {
			return nil, usagef("relay: --lanes %q: want lane numbers such as 0,1,2", s)
		}
		lanes = append(lanes, n)
	}
	return lanes, nil
}

func (a *app) relay(ctx context.Context, _ []string) error {
	o := a.relayOpts
	if o.brokerURL == "" {
		o.brokerURL = a.getenv(broker.EnvBroker)
	}
	if o.brokerURL == "" {
		return usagef("relay: no broker: pass --broker or set %s (e.g. nats://127.0.0.1:4222, gochannel://)", broker.EnvBroker)
	}
	inProcess, err := checkInProcess("relay", o.brokerURL, o.allowInProcess)
	if err != nil {
		return err
	}
	lanes, err := parseLanes(o.lanes)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usagef("relay: --log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	logger := slog.New(slog.NewTextHandler(a.stderr, hopts))
	if a.jsonOut {
		logger = slog.New(slog.NewJSONHandler(a.stderr, hopts))
	}

	pool, n, err := a.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	for _, l := range lanes {
		if l >= n {
			return usagef("relay: --lanes: lane %d does not exist (the database has %d lanes)", l, n)
		}
	}
	b, err := broker.Open(ctx, o.brokerURL, broker.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer b.Close()

	cfg := bus.RelayConfig{
		Pool: pool, Publisher: b.Publisher(), ConsumerGroup: a.group, Lanes: lanes, Logger: logger,
		PollInterval: o.pollInterval, MaxAttempts: o.maxAttempts, Retention: o.retention,
	}
	if o.metricsAddr != "" {
		stop, err := a.serveMetrics(ctx, o.metricsAddr, pool, &cfg, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	r, err := bus.NewRelay(cfg)
	if err != nil {
		return usagef("relay: %v", err)
	}
	if inProcess != "" {
		logger.Warn(inProcess, "broker", broker.Redact(o.brokerURL))
	}
	logger.Info("Relay started", "database", redactDSN(a.databaseURL), "broker", broker.Redact(o.brokerURL),
		"group", a.group, "lanes", laneList(lanes, n))
	if err := r.Run(ctx); err != nil {
		return err
	}
	logger.Info("Relay stopped")
	return nil
}

func laneList(lanes []int, n int) string {
	if len(lanes) == 0 {
		return fmt.Sprintf("all %d", n)
	}
	s := make([]string, len(lanes))
	for i, l := range lanes {
		s[i] = strconv.Itoa(l)
	}
	return strings.Join(s, ",")
}

// serveMetrics serves /metrics on addr: the outbox status, the relay's
// publish metrics (added to cfg's middlewares), and the Go runtime's.
func (a *app) serveMetrics(ctx context.Context, addr string, pool observe.DB, cfg *bus.RelayConfig, logger *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{ConsumerGroup: cfg.ConsumerGroup,
		OnError: func(err error) { logger.Warn("Status metrics: query failed", "error", err) }}); err != nil {
		return nil, err
	}
	m, err := observe.NewRelayMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg.Middlewares = append(cfg.Middlewares, m.Middleware)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: --metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("Metrics server failed", "error", err)
		}
	}()
	logger.Info("Serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
