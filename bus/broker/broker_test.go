package broker_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"
)

func TestOpenUnknownSchemeNamesTheAvailableOnes(t *testing.T) {
	_, err := broker.Open(context.Background(), "mqtt://user:hunter2@127.0.0.1:1883", broker.Options{})
	if !errors.Is(err, broker.ErrUnknownScheme) {
		t.Fatalf("err = %v, want ErrUnknownScheme", err)
	}
	for _, want := range []string{`"mqtt"`, "gochannel"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %q", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:secret@127.0.0.1:5672/": "amqp://guest:xxxxx@127.0.0.1:5672/",
		"nats://s3cr3ttoken@127.0.0.1:4222":   "nats://xxxxx@127.0.0.1:4222",
		"gochannel://":                        "gochannel://",
		"kafka://127.0.0.1:9092":              "kafka://127.0.0.1:9092",
	} {
		if got := broker.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := broker.Open(context.Background(), "", broker.Options{}); err == nil || !strings.Contains(err.Error(), broker.EnvBroker) {
		t.Errorf("empty URL: %v, want a hint at %s", err, broker.EnvBroker)
	}
}

// optionsSeen receives what the optionstest driver is opened with; tests
// using it do not run in parallel.
var optionsSeen func(*url.URL, broker.Options)

// registerOptionsTest registers the optionstest scheme, once per test
// binary (tests may run with -count).
var registerOptionsTest = sync.OnceFunc(func() {
	broker.Register("optionstest", func(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
		optionsSeen(u, opts)
		return nil, errors.New("not a broker")
	})
})

// TestReconnectMax checks that reconnect_max in any URL reaches the driver
// as Options.ReconnectMax, removed from the URL, with the default when
// neither sets it.
func TestReconnectMax(t *testing.T) {
	registerOptionsTest()
	var got broker.Options
	var gotURL *url.URL
	optionsSeen = func(u *url.URL, opts broker.Options) { got, gotURL = opts, u }
	ctx := context.Background()
	for _, tc := range []struct {
		url       string
		opts      broker.Options
		want      time.Duration
		wantQuery string
	}{
		{"optionstest://h/?a=1", broker.Options{}, broker.ReconnectMaxDefault, "a=1"},
		{"optionstest://h/", broker.Options{ReconnectMax: 5 * time.Second}, 5 * time.Second, ""},
		{"optionstest://h/?reconnect_max=750ms&a=1", broker.Options{ReconnectMax: 5 * time.Second}, 750 * time.Millisecond, "a=1"},
	} {
		_, _ = broker.Open(ctx, tc.url, tc.opts)
		if got.ReconnectMax != tc.want || gotURL.RawQuery != tc.wantQuery || got.Logger == nil {
			t.Errorf("Open(%s, %+v): driver got ReconnectMax %v, query %q, logger %v; want %v, %q and a logger", tc.url, tc.opts, got.ReconnectMax, gotURL.RawQuery, got.Logger, tc.want, tc.wantQuery)
		}
	}
	for _, bad := range []string{"optionstest://h/?reconnect_max=soon", "optionstest://h/?reconnect_max=0s", "optionstest://h/?reconnect_max=-1s"} {
		if _, err := broker.Open(ctx, bad, broker.Options{}); err == nil || !strings.Contains(err.Error(), "reconnect_max") {
			t.Errorf("Open(%s) = %v, want an error naming reconnect_max", bad, err)
		}
	}
	if _, err := broker.Open(ctx, "optionstest://h/", broker.Options{ReconnectMax: -time.Second}); err == nil || !strings.Contains(err.Error(), "ReconnectMax") {
		t.Errorf("negative ReconnectMax: %v, want an error", err)
	}
}
