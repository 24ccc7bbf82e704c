// Package broker opens a message broker from a URL, so that an application
// swaps brokers by configuration alone.
//
// Each broker adapter lives in its own package and registers its URL
// schemes when imported, as database/sql drivers do; an application
// compiles only the clients it imports:
//
//	import _ "github.com/edupulse/eventbus/bus/broker/natsbroker"
//
//	b, err := broker.Open(ctx, os.Getenv("EVENTBUS_BROKER"), broker.Options{})
//
// The adapters shipped with eventbus, by scheme: gochannel (in process),
// nats (JetStream), amqp (RabbitMQ), kafka, redis (streams) and postgres
// (watermill-sql as the broker). Every adapter uses the message's
// aggregate id (metadata bus.MetadataAggregateID) as its partition or
// routing key where the broker has one.
//
// # Reconnecting
//
// Every adapter reconnects to a broker that went away (restarted, or
// unreachable for a while), for as long as it takes, and never waits more
// than Options.ReconnectMax (2 seconds by default) between two attempts,
// so that subscribers resume within seconds of the broker being back. The
// URL parameter reconnect_max, which every scheme accepts
// (nats://host:4222?reconnect_max=5s), overrides it. Each adapter's
// package doc says how its client reconnects.
package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// EnvBroker is the environment variable conventionally holding the broker
// URL.
const EnvBroker = "EVENTBUS_BROKER"

// Broker is an open connection to a message broker.
type Broker interface {
	// Publisher returns the broker's publisher. It is safe for concurrent
	// use and owned by the Broker: do not close it.
	Publisher() message.Publisher
	// Subscriber returns a subscriber for a consumer group: subscribers of
	// one group share the messages of a topic (each message goes to one of
	// them), different groups each get every message. The Broker closes
	// it on Close.
	Subscriber(group string) (message.Subscriber, error)
	// Close releases the broker's connections.
	Close() error
}

// ReconnectMaxDefault is the default of Options.ReconnectMax.
const ReconnectMaxDefault = 2 * time.Second

// ParamReconnectMax is the URL query parameter every scheme accepts to set
// Options.ReconnectMax (a duration such as 5s); Open removes it from the
// URL before the adapter sees it.
const ParamReconnectMax = "reconnect_max"

// Options configures Open; adapters read what applies to them.
type Options struct {
	// Logger receives the adapter's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// ReconnectMax is the longest pause between two attempts to reach a
	// broker that went away: clients back off from a fraction of a second
	// up to it (adapters whose client retries at a fixed, shorter pace keep
	// it; see each adapter's package doc). The URL parameter reconnect_max
	// overrides it. Defaults to ReconnectMaxDefault, 2 seconds.
	ReconnectMax time.Duration
}

// WithDefaults returns o with its zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.ReconnectMax = cmp.Or(o.ReconnectMax, ReconnectMaxDefault)
	return o
}

// Validate reports what is wrong with o.
func (o Options) Validate() error {
	if o.ReconnectMax < 0 {
		return fmt.Errorf("ReconnectMax %s is negative", o.ReconnectMax)
	}
	return nil
}

// reconnectMaxFromURL moves the reconnect_max parameter from u's query to
// opts.
func reconnectMaxFromURL(u *url.URL, opts *Options) error {
	q := u.Query()
	if !q.Has(ParamReconnectMax) {
		return nil
	}
	v := q.Get(ParamReconnectMax)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%s=%q: want a positive duration such as 2s", ParamReconnectMax, v)
	}
	opts.ReconnectMax = d
	q.Del(ParamReconnectMax)
	u.RawQuery = q.Encode()
	return nil
}

// Driver opens a broker from a parsed URL. Adapters register one per
// scheme.
type Driver func(ctx context.Context, u *url.URL, opts Options) (Broker, error)

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available under a URL scheme. It panics if the
// scheme is registered twice or the driver is nil, like sql.Register.
func Register(scheme string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d == nil {
		panic("broker: Register driver is nil")
	}
	if _, dup := drivers[scheme]; dup {
		panic("broker: Register called twice for scheme " + scheme)
	}
	drivers[scheme] = d
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	s := make([]string, 0, len(drivers))
	for k := range drivers {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// ErrUnknownScheme is returned by Open for a scheme no imported adapter
// registered.
var ErrUnknownScheme = errors.New("unknown broker scheme")

// Open opens the broker a URL names, such as "nats://127.0.0.1:4222" or
// "gochannel://". Errors never contain the URL's password.
func Open(ctx context.Context, rawURL string, opts Options) (Broker, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("broker: empty URL (set %s, e.g. gochannel:// or nats://127.0.0.1:4222)", EnvBroker)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error quotes the input: don't let a password through.
		return nil, fmt.Errorf("broker: malformed URL %q", Redact(rawURL))
	}
	driversMu.RLock()
	d, ok := drivers[u.Scheme]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("broker: %w %q in %s; available: %s (import the adapter package, e.g. _ \"github.com/edupulse/eventbus/bus/broker/natsbroker\")",
			ErrUnknownScheme, u.Scheme, Redact(rawURL), strings.Join(Schemes(), ", "))
	}
	if err := reconnectMaxFromURL(u, &opts); err != nil {
		return nil, fmt.Errorf("broker: open %s: %w", Redact(rawURL), err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("broker: open %s: %w", Redact(rawURL), err)
	}
	opts = opts.WithDefaults()
	b, err := d(ctx, u, opts)
	if err != nil {
		return nil, fmt.Errorf("broker: open %s: %s", Redact(rawURL), RedactError(err, u))
	}
	return b, nil
}

// OpenFromEnv opens the broker named by $EVENTBUS_BROKER, or fallback when
// it is unset.
func OpenFromEnv(ctx context.Context, fallback string, opts Options) (Broker, error) {
	return Open(ctx, cmp.Or(os.Getenv(EnvBroker), fallback), opts)
}

// Redact returns the URL with its password replaced by "xxxxx", for logs
// and errors. A string that does not parse is reduced to its scheme.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if i := strings.Index(rawURL, "://"); i > 0 {
			return rawURL[:i] + "://(unparsable)"
		}
		return "(unparsable URL)"
	}
	if u.User == nil {
		return rawURL
	}
	if _, has := u.User.Password(); !has {
		// A user alone may be a token (nats://TOKEN@host): mask it too.
		u.User = url.User("xxxxx")
		return u.String()
	}
	return u.Redacted()
}

// RedactError returns err's text with u's password, if any, replaced.
func RedactError(err error, u *url.URL) string {
	s := err.Error()
	if u == nil || u.User == nil {
		return s
	}
	if p, ok := u.User.Password(); ok && p != "" {
		s = strings.ReplaceAll(s, p, "xxxxx")
	} else if name := u.User.Username(); name != "" {
		s = strings.ReplaceAll(s, name, "xxxxx")
	}
	return s
}
