// Package gochannelbroker registers the "gochannel" broker scheme: Watermill's
// in-process GoChannel, for tests, examples and single-process
// applications.
//
// URL: gochannel://[?block=false&buffer=N]
//
// By default a publish blocks until every subscriber acknowledged the
// message (block=true), so the relay marks an event relayed only once the
// consumers handled it: nothing is lost when the process stops. There are
// no consumer groups: every subscriber of a topic gets every message, and a
// message published to a topic nobody subscribes to is dropped, so
// subscribe before starting the relay. Per-aggregate order is kept.
//
// No error is permanent (bus.Permanent): GoChannel refuses no message for
// its size or contents, and its only error, a closed GoChannel, is not the
// message's fault.
package gochannelbroker

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edupulse/eventbus/bus/broker"
)

// Scheme is the URL scheme this package registers.
const Scheme = "gochannel"

func init() { broker.Register(Scheme, Open) }

type goChannelBroker struct{ gc *gochannel.GoChannel }

// Open is the gochannel driver.
func Open(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	q := u.Query()
	cfg := gochannel.Config{BlockPublishUntilSubscriberAck: true}
	if v := q.Get("block"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("gochannel: block=%q: %w", v, err)
		}
		cfg.BlockPublishUntilSubscriberAck = b
	}
	if v := q.Get("buffer"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("gochannel: buffer=%q: want a non-negative integer", v)
		}
		cfg.OutputChannelBuffer = n
	}
	return &goChannelBroker{gc: gochannel.NewGoChannel(cfg, watermill.NewSlogLogger(opts.Logger))}, nil
}

func (b *goChannelBroker) Publisher() message.Publisher { return b.gc }

func (b *goChannelBroker) Subscriber(string) (message.Subscriber, error) { return noClose{b.gc}, nil }

func (b *goChannelBroker) Close() error { return b.gc.Close() }

// noClose keeps a consumer's router from closing the shared GoChannel.
type noClose struct{ *gochannel.GoChannel }

func (noClose) Close() error { return nil }
