package bus_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// wireMessage is a message of any wire name and version, such as a newer
// producer sends: its registry has events this consumer's does not.
func wireMessage(name string, version int) *message.Message {
	msg := message.NewMessage(uuid.NewString(), []byte(`{"text":"from a newer producer"}`))
	msg.Metadata.Set(bus.MetadataName, name)
	msg.Metadata.Set(bus.MetadataVersion, strconv.Itoa(version))
	msg.Metadata.Set(bus.MetadataAggregateID, "p1")
	return msg
}

// runUntilDone runs c until the test ends and returns a context that ends
// when c stops, for the messages delivered by a chanSubscriber.
func runUntilDone(t *testing.T, c *bus.Consumer) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("consumer did not stop")
		}
	})
	select {
	case <-c.Running():
	case err := <-done:
		t.Fatalf("consumer stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("consumer did not start")
	}
	return ctx
}

// Issue 10.5: what a consumer does with events its registry or its
// handlers do not know, under the default policy (dead-letter). An event of
// a name its registry holds and it handles in no version is not for it, and
// is acked: a typed consumer on a shared topic sees other names all the
// time. Anything its registry does not hold (a newer producer's name or
// version) follows the policy, whether it handles the name or not: its own
// next version may. So does a version without a handler of a name it
// handles in another version.
func TestConsumerUnknownNamesAndVersions(t *testing.T) {
	t.Parallel()
	type delivery struct {
		topic, name string
		version     int
		want        string // "acked" or "dead-lettered"
	}
	for _, tc := range []struct {
		name     string
		register func(*bus.Consumer) error
		msgs     []delivery
	}{
		{
			name: "typed handler of PulseAnswered only",
			register: func(c *bus.Consumer) error {
				return bus.On(c, func(context.Context, gen.PulseAnswered) error { return nil })
			},
			msgs: []delivery{
				{"edupulse.pulse.created", "edupulse.pulse.created", 1, "acked"},           // a name it does not handle
				{"edupulse.pulse.created", "edupulse.pulse.created", 9, "dead-lettered"},   // a version its registry lacks, of such a name
				{"edupulse.pulse.created", "edupulse.pulse.retired", 1, "dead-lettered"},   // a name its registry lacks
				{"edupulse.pulse.answered", "edupulse.pulse.answered", 9, "dead-lettered"}, // a version its registry lacks, of its name
			},
		},
		{
			name: "OnAny handler",
			register: func(c *bus.Consumer) error {
				return c.OnAny(func(context.Context, bus.Event) error { return nil })
			},
			msgs: []delivery{
				{"edupulse.pulse.created", "edupulse.pulse.retired", 1, "dead-lettered"},
				{"edupulse.pulse.created", "edupulse.pulse.created", 9, "dead-lettered"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sub := newChanSubscriber()
			dead, deadCh := deadLetters(t)
			c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: sub, Group: "unknown",
				DeadLetter: dead, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.register(c); err != nil {
				t.Fatal(err)
			}
			ctx := runUntilDone(t, c)
			for _, d := range tc.msgs {
				deadBefore := c.Stats().DeadLettered
				msg := sub.deliver(ctx, d.topic, wireMessage(d.name, d.version))
				what := d.name + " version " + strconv.Itoa(d.version)
				got := ackState(msg, 15*time.Second)
				var reason string
				// A dead letter is counted before the message is acked.
				if got == "acked" && c.Stats().DeadLettered > deadBefore {
					got = "dead-lettered"
					select {
					case m := <-deadCh:
						reason = m.Metadata.Get(bus.MetadataDeadLetterReason)
					case <-time.After(15 * time.Second):
						t.Fatalf("%s: dead letter counted, not received", what)
					}
				}
				if got != d.want {
					t.Errorf("%s: %s, want %s", what, got, d.want)
				}
				if got == "dead-lettered" && !strings.Contains(reason, "unknown event") {
					t.Errorf("%s: dead-letter reason %q does not say the event is unknown", what, reason)
				}
			}
		})
	}
}

// lockedBuffer collects a logger's output for a test to read.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Issue 10.5: the unknown-version policy, per consumer. A consumer that
// handles test.ping version 1 receives version 2 (in its registry, without
// a handler) and version 3 (not in its registry): dead-letter, retry later
// (nack after a backoff that grows with each delivery, until a consumer
// that handles the version takes it) or skip (ack, log, count).
func TestConsumerUnknownVersionPolicies(t *testing.T) {
	t.Parallel()
	v2 := func(t *testing.T) *message.Message {
		msg, err := pingRegistry.NewMessage(context.Background(), newPingV2("two", 2))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	v3 := func(*testing.T) *message.Message { return wireMessage("test.ping", 3) }
	newConsumer := func(t *testing.T, policy bus.UnknownVersionPolicy, logs *lockedBuffer) (*bus.Consumer, *chanSubscriber, <-chan *message.Message, context.Context) {
		t.Helper()
		sub := newChanSubscriber()
		dead, deadCh := deadLetters(t)
		logger := testLogger()
		if logs != nil {
			logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: sub, Group: "policy-" + string(policy),
			DeadLetter: dead, Logger: logger, UnknownVersion: policy, BackoffInitial: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.On(c, func(context.Context, pingV1) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return c, sub, deadCh, runUntilDone(t, c)
	}

	t.Run("dead-letter", func(t *testing.T) {
		t.Parallel()
		c, sub, deadCh, ctx := newConsumer(t, bus.UnknownVersionDeadLetter, nil)
		for i, mk := range []func(*testing.T) *message.Message{v2, v3} {
			msg := sub.deliver(ctx, "test.ping", mk(t))
			if got := ackState(msg, 15*time.Second); got != "acked" {
				t.Fatalf("message %d %s, want acked after its dead letter", i, got)
			}
			if st := c.Stats(); st.DeadLettered != int64(i+1) {
				t.Fatalf("stats %+v after message %d: want %d dead letters", st, i, i+1)
			}
			select {
			case m := <-deadCh:
				if reason := m.Metadata.Get(bus.MetadataDeadLetterReason); !strings.Contains(reason, bus.ErrUnknownVersion.Error()) {
					t.Errorf("dead-letter reason %q does not wrap ErrUnknownVersion", reason)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("dead letter counted, not received")
			}
		}
	})

	t.Run("retry", func(t *testing.T) {
		t.Parallel()
		c, sub, deadCh, ctx := newConsumer(t, bus.UnknownVersionRetry, nil)
		for i, mk := range []func(*testing.T) *message.Message{v2, v3} {
			first := mk(t)
			// Delivered three times: nacked each time, after a pause of
			// BackoffInitial (200 ms) doubling per delivery, ±50%.
			for n := 1; n <= 3; n++ {
				msg := first.Copy()
				delivered := time.Now()
				sub.deliver(ctx, "test.ping", msg)
				if got := ackState(msg, 15*time.Second); got != "nacked" {
					t.Fatalf("message %d, delivery %d: %s, want nacked", i, n, got)
				}
				minPause := 100 * time.Millisecond << (n - 1)
				if waited := time.Since(delivered); waited < minPause {
					t.Errorf("message %d, delivery %d: nacked after %v, want a pause of at least %v", i, n, waited, minPause)
				}
			}
			if st := c.Stats(); st.Postponed != int64(3*(i+1)) || st.DeadLettered != 0 || st.Handled != 0 {
				t.Fatalf("stats %+v: want %d postponed deliveries, nothing handled or dead-lettered", st, 3*(i+1))
			}
		}
		select {
		case m := <-deadCh:
			t.Fatalf("dead letter: %s", m.Metadata.Get(bus.MetadataDeadLetterReason))
		default:
		}
		// The rolling deploy reaches the group: a consumer that handles
		// version 2 takes the redelivered message.
		sub2 := newChanSubscriber()
		upgraded, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: sub2, Group: "policy-retry",
			DeadLetter: newGoChannel(t), Logger: testLogger(), UnknownVersion: bus.UnknownVersionRetry})
		if err != nil {
			t.Fatal(err)
		}
		var got atomic.Value
		if err := bus.On(upgraded, func(_ context.Context, e pingV2) error { got.Store(e.Text); return nil }); err != nil {
			t.Fatal(err)
		}
		msg := v2(t)
		if st := ackState(sub2.deliver(runUntilDone(t, upgraded), "test.ping", msg), 15*time.Second); st != "acked" || got.Load() != "two" {
			t.Fatalf("upgraded consumer: message %s, handler got %v", st, got.Load())
		}
	})

	t.Run("skip", func(t *testing.T) {
		t.Parallel()
		logs := &lockedBuffer{}
		c, sub, deadCh, ctx := newConsumer(t, bus.UnknownVersionSkip, logs)
		for i, mk := range []func(*testing.T) *message.Message{v2, v3} {
			msg := sub.deliver(ctx, "test.ping", mk(t))
			if got := ackState(msg, 15*time.Second); got != "acked" {
				t.Fatalf("message %d %s, want acked", i, got)
			}
			if st := c.Stats(); st.Skipped != int64(i+1) || st.DeadLettered != 0 || st.Handled != 0 || st.Failed != 0 {
				t.Fatalf("stats %+v after message %d: want %d skipped, nothing else", st, i, i+1)
			}
		}
		select {
		case m := <-deadCh:
			t.Fatalf("dead letter: %s", m.Metadata.Get(bus.MetadataDeadLetterReason))
		default:
		}
		for _, want := range []string{"event_version=2", "event_version=3"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log does not mention the skipped %s:\n%s", want, logs.String())
			}
		}
	})
}

func TestConsumerUnknownVersionPolicyValidated(t *testing.T) {
	_, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: newGoChannel(t), Group: "g",
		DeadLetter: newGoChannel(t), UnknownVersion: "later"})
	if err == nil || !strings.Contains(err.Error(), `UnknownVersion "later"`) {
		t.Fatalf("NewConsumer with an unknown policy: %v", err)
	}
	for _, p := range bus.AllUnknownVersionPolicyValues() {
		if _, err := bus.NewConsumer(bus.ConsumerConfig{Registry: pingRegistry, Subscriber: newGoChannel(t), Group: "g",
			DeadLetter: newGoChannel(t), UnknownVersion: p}); err != nil {
			t.Errorf("policy %s: %v", p, err)
		}
	}
}
