package broker

import (
	"fmt"
	"net/url"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edupulse/eventbus/bus"
)

// Publisher is the publisher an adapter hands out, around its client
// library's: it names the adapter and the topic in errors, masks the broker
// URL's password in them, marks as permanent (bus.Permanent) the errors
// that Permanent recognises, and leaves the client's publisher open on
// Close (the Broker owns it).
//
// A permanent error means the broker will refuse these messages however
// often they are sent: too large for it, a topic name it does not accept, a
// topic the credentials may not write to, a value it cannot store. The relay
// dead-letters such an event after RelayConfig.MaxAttempts attempts instead
// of retrying it, and the events behind it go on. Anything else (the broker
// unreachable, a timeout, a full disk, an unknown error) is retried for as
// long as it lasts, so a Permanent function must only recognise errors it
// knows for sure. A Publish of several messages fails as a whole: its error
// is permanent when one of the messages is refused for good.
type Publisher struct {
	// Publisher is the client library's publisher. Required.
	Publisher message.Publisher
	// Name prefixes errors: "natsbroker" gives "natsbroker: publish to
	// TOPIC: ...".
	Name string
	// URL is the broker URL, whose password is masked in errors. Optional.
	URL *url.URL
	// Permanent reports whether an error of Publisher is one the broker
	// will always return for these messages. Nil: none is (errors that
	// Publisher itself marked with bus.Permanent stay permanent).
	Permanent func(error) bool
}

// Publish implements message.Publisher.
func (p Publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.wrap(topic, p.Publisher.Publish(topic, msgs...))
}

// wrap names the adapter and the topic in a publish error, masks the
// URL's password and marks the error permanent if Permanent says so.
func (p Publisher) wrap(topic string, err error) error {
	if err == nil {
		return nil
	}
	wrapped := &publishError{
		text: fmt.Sprintf("%s: publish to %s: %s", p.Name, topic, RedactError(err, p.URL)),
		err:  err,
	}
	if !bus.IsPermanent(err) && p.Permanent != nil && p.Permanent(err) {
		return bus.Permanent(wrapped)
	}
	return wrapped
}

// PublishDurably implements bus.DurablePublisher: the client's
// PublishDurably when it has one, its Publish otherwise (a client whose
// broker keeps a topic's messages for groups that subscribe later). Errors
// are wrapped as Publish's are.
func (p Publisher) PublishDurably(topic string, msgs ...*message.Message) error {
	dp, ok := p.Publisher.(bus.DurablePublisher)
	if !ok {
		return p.Publish(topic, msgs...)
	}
	return p.wrap(topic, dp.PublishDurably(topic, msgs...))
}

var _ bus.DurablePublisher = Publisher{}

// PublishesConcurrently implements bus.ConcurrentPublisher: every
// adapter's Publish may be called from many goroutines at once, each call
// waiting for its own confirmation, and the relay keeps several events in
// flight to it.
func (Publisher) PublishesConcurrently() bool { return true }

// Close implements message.Publisher; it does nothing.
func (Publisher) Close() error { return nil }

// publishError is a publish error whose text has the URL's password masked,
// still wrapping the client's error for errors.Is and errors.As.
type publishError struct {
	text string
	err  error
}

func (e *publishError) Error() string { return e.text }
func (e *publishError) Unwrap() error { return e.err }
