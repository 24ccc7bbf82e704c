package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// consumerMessage is a PulseCreated message with fixed metadata, so that
// the command's output can be compared with golden files.
func consumerMessage(t *testing.T, title string) *message.Message {
	t.Helper()
	ev := gen.NewPulseCreated(pulses[1], author, title, t0)
	msg, err := gen.Registry().NewMessage(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	out := message.NewMessage(uuid.NewString(), msg.Payload)
	out.Metadata = message.Metadata{
		bus.MetadataName:        ev.EventName(),
		bus.MetadataVersion:     "1",
		bus.MetadataAggregateID: pulses[1].String(),
	}
	return out
}

// Issue 10.3: `eventbus dlq` lists, shows, fixes, replays and discards the
// dead letters of both kinds, relay and consumer, with a column saying
// which; a consumer dead letter is replayed to its broker topic.
func TestConsumerDeadLettersCLI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, _ := migrated(t, 1)
	db := []string{"--database-url", url}
	deadLetterRow(t, pool, uuid.NewString()) // a relay dead letter: id 1

	// A consumer on a PostgreSQL broker (another database), which the
	// command can reach by URL, with a handler that fails until fixed.
	brokerURL := pgtest.NewDatabase(t)
	b, err := broker.Open(ctx, brokerURL, broker.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	sub, err := b.Subscriber("badges")
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: gen.Registry(), Subscriber: sub, Group: "badges",
		Pool: pool, Logger: quietLogger(), MaxRetries: 1, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	var applied atomic.Int64
	if err := bus.OnTx(c, func(ctx context.Context, tx pgx.Tx, e gen.PulseCreated) ([]bus.Event, error) {
		if broken.Load() {
			return nil, errors.New("handler is broken")
		}
		applied.Add(1)
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	<-c.Running()

	failing := consumerMessage(t, "Fails until fixed") // id 2
	malformed := consumerMessage(t, "Malformed")       // id 3
	malformed.Payload = []byte(`{"pulse_id": 42}`)
	topic := "edupulse.pulse.created"
	for _, m := range []*message.Message{failing, malformed} {
		if err := b.Publisher().Publish(topic, m); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the dead letter of "+m.UUID, func() bool {
			list, err := bus.NewDeadLetters(pool).ListConsumer(ctx, bus.ConsumerListOptions{})
			return err == nil && len(list) > 0 && list[len(list)-1].MessageUUID == m.UUID
		})
	}

	// list: both kinds, human and JSON, and filtered.
	r := mustCLI(t, append([]string{"dlq", "list"}, db...)...)
	golden(t, "dlq_list_kinds.txt", normalize(r.stdout))
	r = mustCLI(t, append([]string{"dlq", "list", "--kind", "consumer", "--json"}, db...)...)
	var list []deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("dlq list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 2 || list[0].ID != 2 || list[0].Kind != "consumer" || list[0].ConsumerGroup != "badges" || list[0].Topic != topic ||
		list[0].EventID != failing.UUID || list[0].Lane != nil || list[0].Attempts != 2 || !strings.Contains(list[0].Error, "handler is broken") ||
		list[1].EventID != malformed.UUID || !strings.Contains(list[1].Error, "malformed event payload") {
		t.Fatalf("dlq list --kind consumer --json: %+v", list)
	}
	if r := mustCLI(t, append([]string{"dlq", "list", "--kind", "relay", "--json"}, db...)...); !strings.Contains(r.stdout, `"kind": "relay"`) ||
		!strings.Contains(r.stdout, `"lane": 0`) || strings.Contains(r.stdout, `"consumer"`) {
		t.Errorf("dlq list --kind relay --json: %s", r)
	}
	if r := mustCLI(t, append([]string{"dlq", "list", "--group", "nobody"}, db...)...); r.stdout != "No dead letters.\n" {
		t.Errorf("dlq list --group nobody: %s", r)
	}
	if r := mustCLI(t, append([]string{"dlq", "list", "--group", "badges", "--limit", "1"}, db...)...); !strings.Contains(r.stdout, failing.UUID) ||
		strings.Contains(r.stdout, malformed.UUID) {
		t.Errorf("dlq list --group badges --limit 1: %s", r)
	}
	for _, args := range [][]string{{"--kind", "bogus"}, {"--kind", "relay", "--group", "badges"}} {
		if r := cli(t, append(append([]string{"dlq", "list"}, args...), db...)...); r.code != exitUsage {
			t.Errorf("dlq list %s: %s", strings.Join(args, " "), r)
		}
	}

	// status counts both kinds.
	r = mustCLI(t, append([]string{"status", "--json"}, db...)...)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.DeadLetters != 1 || st.ConsumerDeadLetters != 2 {
		t.Errorf("status --json: %+v, %v; want 1 relay and 2 consumer dead letters", st, err)
	}

	// show.
	r = mustCLI(t, append([]string{"dlq", "show", "2"}, db...)...)
	golden(t, "dlq_show_consumer.txt", normalize(r.stdout))
	r = mustCLI(t, append([]string{"dlq", "show", "3", "--json"}, db...)...)
	var shown deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("dlq show --json: %v\n%s", err, r.stdout)
	}
	// The command knows no event types: the payload is JSON, so the event
	// shows; the reason says why the consumer's type refused it.
	if shown.Kind != "consumer" || string(rawJSON(shown.Payload)) != `{"pulse_id":42}` || shown.Event == nil || shown.Event.Error != "" ||
		string(rawJSON(shown.Event.Payload)) != `{"pulse_id":42}` || !strings.Contains(shown.Error, "malformed event payload") {
		t.Fatalf("dlq show 3 --json: %+v", shown)
	}

	// replay: a consumer dead letter needs the broker, and goes back to its
	// topic; the fixed handler applies it once.
	noBroker := &app{stdin: os.Stdin, getenv: func(string) string { return "" }, registry: gen.Registry()}
	var stdout, stderr syncBuffer
	noBroker.stdout, noBroker.stderr = &stdout, &stderr
	if code := noBroker.main(ctx, append([]string{"dlq", "replay", "2"}, db...)); code != exitUsage || !strings.Contains(stderr.String(), "--broker") {
		t.Errorf("dlq replay of a consumer dead letter without a broker: exit %d, %s", code, stderr.String())
	}
	broken.Store(false)
	r = mustCLI(t, append([]string{"dlq", "replay", "2", "--broker", brokerURL}, db...)...)
	if !strings.Contains(r.stdout, "Replayed dead letter 2: event "+failing.UUID+" is back on topic "+topic+", for consumer group badges") {
		t.Errorf("dlq replay 2: %s", r)
	}
	waitFor(t, "the replayed event applied", func() bool { return applied.Load() == 1 })

	// fix, then replay, the malformed one.
	file := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(file, consumerMessage(t, "Fixed").Payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mustCLI(t, append([]string{"dlq", "fix", "3", file}, db...)...); !strings.Contains(r.stdout, "Fixed dead letter 3") {
		t.Errorf("dlq fix 3: %s", r)
	}
	mustCLI(t, append([]string{"dlq", "replay", "3", "--broker", brokerURL}, db...)...)
	waitFor(t, "the fixed event applied", func() bool { return applied.Load() == 2 })
	if r := mustCLI(t, append([]string{"dlq", "list", "--kind", "consumer"}, db...)...); r.stdout != "No dead letters.\n" {
		t.Errorf("dlq list after the replays: %s", r)
	}
	if r := mustCLI(t, append([]string{"dlq", "list", "--all"}, db...)...); !strings.Contains(r.stdout, "REPLAYED AT") ||
		!strings.Contains(r.stdout, failing.UUID) || !strings.Contains(r.stdout, malformed.UUID) {
		t.Errorf("dlq list --all: %s", r)
	}

	// discard, then the id is unknown.
	if r := mustCLI(t, append([]string{"--json", "dlq", "discard", "3"}, db...)...); strings.TrimSpace(r.stdout) != "{\n  \"id\": 3,\n  \"action\": \"discarded\"\n}" {
		t.Errorf("dlq discard --json: %s", r)
	}
	for _, cmd := range []string{"show", "replay", "discard"} {
		r := cli(t, append([]string{"dlq", cmd, "3"}, db...)...)
		if r.code != exitError || r.stderr != "eventbus: no dead letter with id 3 (see `eventbus dlq list --all`)\n" {
			t.Errorf("dlq %s of a discarded id: %s", cmd, r)
		}
	}
	if applied.Load() != 2 {
		t.Errorf("events applied %d times, want 2", applied.Load())
	}
}
