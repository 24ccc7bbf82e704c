package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
