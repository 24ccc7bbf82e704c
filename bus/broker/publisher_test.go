package broker_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

type failingPublisher struct{ err error }

func (p failingPublisher) Publish(string, ...*message.Message) error { return p.err }
func (failingPublisher) Close() error                                { return errors.New("closed the client's publisher") }

var (
	errRefused = errors.New("refused: too large")
	errOutage  = errors.New("connection refused to amqp://guest:s3cret@127.0.0.1")
)

func TestPublisherMarksPermanentErrors(t *testing.T) {
	u, _ := url.Parse("amqp://guest:s3cret@127.0.0.1:5672/")
	isRefused := func(err error) bool { return errors.Is(err, errRefused) }
	msg := message.NewMessage("m-1", []byte("{}"))
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
	}{
		{"recognised", errRefused, true},
		{"other", errOutage, false},
		{"marked by the client", bus.Permanent(errors.New("malformed")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := broker.Publisher{Publisher: failingPublisher{tc.err}, Name: "testbroker", URL: u, Permanent: isRefused}
			err := p.Publish("pulses", msg)
			if got := bus.IsPermanent(err); got != tc.permanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, got, tc.permanent)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
			if !strings.HasPrefix(err.Error(), "testbroker: publish to pulses: ") {
				t.Errorf("error %q does not name the adapter and topic", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	p := broker.Publisher{Publisher: failingPublisher{}, Name: "testbroker"}
	if err := p.Publish("pulses", msg); err != nil {
		t.Errorf("Publish = %v, want nil", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v: it must leave the client's publisher to the broker", err)
	}
}

// durableClient is a client publisher with PublishDurably.
type durableClient struct {
	failingPublisher
	durable int
}

func (c *durableClient) PublishDurably(string, ...*message.Message) error {
	c.durable++
	return c.err
}

// PublishDurably uses the client's PublishDurably when it has one (errors
// wrapped and classified as Publish's), and Publish otherwise.
func TestPublisherPublishDurably(t *testing.T) {
	msg := message.NewMessage("m-1", []byte("{}"))
	isRefused := func(err error) bool { return errors.Is(err, errRefused) }
	client := &durableClient{failingPublisher: failingPublisher{errRefused}}
	p := broker.Publisher{Publisher: client, Name: "testbroker", Permanent: isRefused}
	err := p.PublishDurably("dead", msg)
	if client.durable != 1 || !bus.IsPermanent(err) || !errors.Is(err, errRefused) || !strings.HasPrefix(err.Error(), "testbroker: publish to dead: ") {
		t.Errorf("PublishDurably = %v after %d client calls; want the client's PublishDurably, its error wrapped and permanent", err, client.durable)
	}
	plain := broker.Publisher{Publisher: failingPublisher{errOutage}, Name: "testbroker"}
	if err := plain.PublishDurably("dead", msg); !errors.Is(err, errOutage) || bus.IsPermanent(err) {
		t.Errorf("PublishDurably without the client's = %v, want Publish's error", err)
	}
}
