package observe_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
	"github.com/edupulse/eventbus/schema"
)

// scrape GETs url and parses the text exposition format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return fams
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value returns a counter, gauge or untyped sample's value, or a
// histogram's sample count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// byLabel returns a family's values keyed by one label's value.
func byLabel(t *testing.T, fams map[string]*dto.MetricFamily, name, key string) map[string]float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s not scraped", name)
	}
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		out[label(m, key)] += value(m)
	}
	return out
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// TestMetricsScrape runs a relay and an inbox consumer over a few events,
// redelivers some, and scrapes /metrics.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const lanes, n, redelivered = 4, 12, 3
	pool, ob := newOutboxDB(t, lanes)
	gc := newGoChannel(t)

	reg := prometheus.NewRegistry()
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err != nil {
		t.Fatal(err)
	}
	relayMetrics, err := observe.NewRelayMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	consumerMetrics, err := observe.NewConsumerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)

	c, err := bus.NewConsumer(bus.ConsumerConfig{
		Registry: gen.Registry(), Subscriber: noClose{gc}, Group: "badges", DeadLetter: gc,
		Pool: pool, Outbox: ob, Logger: testLogger(),
		Middlewares: []message.HandlerMiddleware{consumerMetrics.Middleware("badges")},
	})
	if err != nil {
		t.Fatal(err)
	}
	bus.OnTx(c, func(context.Context, pgx.Tx, gen.PulseCreated) ([]bus.Event, error) { return nil, nil })
	if err := consumerMetrics.Watch("badges", c); err != nil {
		t.Fatal(err)
	}
	if err := consumerMetrics.Watch("badges", c); err == nil {
		t.Error("watching a group twice: no error")
	}
	startConsumer(t, c)

	var evs []bus.Event
	for i := range n {
		evs = append(evs, pulseCreated(fmt.Sprint("pulse ", i)))
	}
	publish(t, ctx, pool, ob, evs...)

	// Before the relay runs: the whole batch is backlog.
	fams := scrape(t, srv.URL)
	if got := sum(byLabel(t, fams, "eventbus_outbox_backlog", "lane")); got != n {
		t.Errorf("backlog before relaying = %v, want %d", got, n)
	}
	if got := byLabel(t, fams, "eventbus_outbox_oldest_pending_age_seconds", "lane"); len(got) != lanes {
		t.Errorf("oldest pending age series = %v, want one per lane", got)
	}

	startRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc,
		Middlewares: []message.HandlerMiddleware{relayMetrics.Middleware}})
	waitFor(t, "the events to be handled", 30*time.Second, func() bool { return c.Stats().Handled >= n })
	redeliver(t, gc, evs[:redelivered]...)
	waitFor(t, "the duplicates to be skipped", 30*time.Second, func() bool { return c.Stats().Duplicates >= redelivered })
	waitFor(t, "the relay to acknowledge every lane", 30*time.Second, func() bool {
		st, err := observe.ReadStatus(ctx, pool, "")
		return err == nil && st.Backlog() == 0
	})

	fams = scrape(t, srv.URL)
	for name, f := range fams {
		if !strings.HasPrefix(name, "eventbus_") {
			t.Errorf("metric %s: want the eventbus_ prefix", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("metric %s has no HELP", name)
		}
	}
	backlog := byLabel(t, fams, "eventbus_outbox_backlog", "lane")
	if len(backlog) != lanes || sum(backlog) != 0 {
		t.Errorf("backlog after draining = %v, want 0 in each of %d lanes", backlog, lanes)
	}
	if got := sum(byLabel(t, fams, "eventbus_outbox_oldest_pending_age_seconds", "lane")); got != 0 {
		t.Errorf("oldest pending age after draining = %v, want 0", got)
	}
	if got := sum(byLabel(t, fams, "eventbus_outbox_rows", "lane")); got != n {
		t.Errorf("stored rows = %v, want %d (the cleaner keeps them for the retention)", got, n)
	}
	published := byLabel(t, fams, "eventbus_relay_published_total", "lane")
	if sum(published) != n {
		t.Errorf("published = %v, want %d in all", published, n)
	}
	if got := sum(byLabel(t, fams, "eventbus_relay_publish_duration_seconds", "lane")); got != n {
		t.Errorf("publish latency observations = %v, want %d", got, n)
	}
	if _, ok := fams["eventbus_relay_publish_errors_total"]; ok {
		t.Errorf("publish errors reported without any failure: %v", byLabel(t, fams, "eventbus_relay_publish_errors_total", "lane"))
	}
	for name, want := range map[string]float64{
		"eventbus_consumer_handled_total":        n + redelivered,
		"eventbus_consumer_duplicates_total":     redelivered,
		"eventbus_consumer_failed_total":         0,
		"eventbus_consumer_dead_lettered_total":  0,
		"eventbus_consumer_outage_retries_total": 0,
		"eventbus_consumer_postponed_total":      0,
		"eventbus_consumer_skipped_total":        0,
	} {
		if got := byLabel(t, fams, name, "consumer_group"); len(got) != 1 || got["badges"] != want {
			t.Errorf("%s = %v, want badges=%v", name, got, want)
		}
	}
	if got := byLabel(t, fams, "eventbus_consumer_handle_duration_seconds", "topic"); got["edupulse.pulse.created"] != n+redelivered {
		t.Errorf("handling latency observations per topic = %v, want %d for edupulse.pulse.created", got, n+redelivered)
	}
	if got := byLabel(t, fams, "eventbus_inbox_rows", "consumer_group"); got["badges"] != n {
		t.Errorf("inbox rows = %v, want badges=%d", got, n)
	}
	if got := value(fams["eventbus_dead_letters"].GetMetric()[0]); got != 0 {
		t.Errorf("dead letters = %v, want 0", got)
	}
	if got := value(fams["eventbus_status_up"].GetMetric()[0]); got != 1 {
		t.Errorf("eventbus_status_up = %v, want 1", got)
	}
	if fams["eventbus_relay_publish_duration_seconds"].GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("eventbus_relay_publish_duration_seconds is a %s, want a histogram", fams["eventbus_relay_publish_duration_seconds"].GetType())
	}
}

// TestMetricsPublishErrorsAndDeadLetters: a malformed outbox row fails
// permanently MaxAttempts times and lands in the dead-letter table.
func TestMetricsPublishErrorsAndDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, ob := newOutboxDB(t, 1)
	gc := newGoChannel(t)
	reg := prometheus.NewRegistry()
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := observe.NewRelayMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, '{"hello": "world"}', '{"event_name": "edupulse.pulse.created"}', pg_current_xact_id())`, uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, pool, ob, pulseCreated("good"))
	const maxAttempts = 3
	startRelay(t, bus.RelayConfig{Pool: pool, Publisher: gc, MaxAttempts: maxAttempts,
		Middlewares: []message.HandlerMiddleware{m.Middleware}})
	waitFor(t, "the dead letter", 30*time.Second, func() bool {
		n, err := bus.NewDeadLetters(pool).Count(ctx)
		return err == nil && n == 1
	})
	waitFor(t, "the good event", 30*time.Second, func() bool {
		n, _ := testutil.GatherAndCount(reg, "eventbus_relay_published_total")
		return n == 1
	})

	want := fmt.Sprintf(`
# HELP eventbus_dead_letters Outbox events the relay dead-lettered and that were not replayed.
# TYPE eventbus_dead_letters gauge
eventbus_dead_letters 1
# HELP eventbus_relay_publish_errors_total Failed attempts to publish an outbox event; permanent="true" for failures that end in the dead-letter table after the relay's MaxAttempts, "false" for outages, retried until they end.
# TYPE eventbus_relay_publish_errors_total counter
eventbus_relay_publish_errors_total{lane="0",permanent="true"} %d
# HELP eventbus_relay_published_total Outbox events the relay published to the broker.
# TYPE eventbus_relay_published_total counter
eventbus_relay_published_total{lane="0"} 1
`, maxAttempts)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"eventbus_dead_letters", "eventbus_relay_publish_errors_total", "eventbus_relay_published_total"); err != nil {
		t.Error(err)
	}
}

// TestStatusCollectorReportsDown: on a database without the schema, only
// eventbus_status_up 0 is reported and OnError gets the error.
func TestStatusCollectorReportsDown(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	var got error
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{OnError: func(err error) { got = err }}); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP eventbus_status_up 1 if the eventbus status queries of this scrape succeeded, 0 if they failed.
# TYPE eventbus_status_up gauge
eventbus_status_up 0
`)); err != nil {
		t.Error(err)
	}
	if !errors.Is(got, schema.ErrNotMigrated) {
		t.Errorf("OnError got %v, want ErrNotMigrated", got)
	}
	// A second registration on the same registry is refused.
	if err := observe.RegisterStatus(reg, pool, observe.StatusOptions{}); err == nil {
		t.Error("second RegisterStatus on one registry: no error")
	}
}
