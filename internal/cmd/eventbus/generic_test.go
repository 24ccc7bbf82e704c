package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// The events of another application than EduPulse, written by hand as a
// user's module would declare them: the command knows nothing of them.
type orderPlaced struct {
	env     bus.Envelope
	OrderID string `json:"order_id"`
	Total   int    `json:"total_cents"`
	Items   []struct {
		SKU string `json:"sku"`
	} `json:"items"`
}

func (orderPlaced) EventName() string        { return "shop.order.placed" }
func (orderPlaced) EventVersion() int        { return 2 }
func (e orderPlaced) Envelope() bus.Envelope { return e.env }

type parcelShipped struct {
	env     bus.Envelope
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}

func (parcelShipped) EventName() string        { return "shop.parcel.shipped" }
func (parcelShipped) EventVersion() int        { return 1 }
func (e parcelShipped) Envelope() bus.Envelope { return e.env }

func shopRegistry(t *testing.T) *bus.Registry {
	t.Helper()
	r, err := bus.NewRegistry(
		bus.EventType{Name: "shop.order.placed", Version: 2, AggregateType: "order", GoType: "orderPlaced",
			Decode: func(env bus.Envelope, p []byte) (bus.Event, error) {
				e := orderPlaced{env: env}
				return e, json.Unmarshal(p, &e)
			}},
		bus.EventType{Name: "shop.parcel.shipped", Version: 1, AggregateType: "order", GoType: "parcelShipped",
			Decode: func(env bus.Envelope, p []byte) (bus.Event, error) {
				e := parcelShipped{env: env}
				return e, json.Unmarshal(p, &e)
			}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTailAndShowAnotherApplicationsEvents: tail and dlq show print the
// events of an application the command was not built with: by name,
// version and aggregate from the metadata, with their JSON payload.
func TestTailAndShowAnotherApplicationsEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool := newDB(t)
	mustCLI(t, "migrate", "--database-url", url, "--lanes", "1")
	ob, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: shopRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	placed := orderPlaced{env: bus.Envelope{ID: uuid.New(), AggregateID: "order-7", AggregateType: "order", OccurredAt: at},
		OrderID: "order-7", Total: 1250}
	placed.Items = append(placed.Items, struct {
		SKU string `json:"sku"`
	}{"tea-42"})
	shipped := parcelShipped{env: bus.Envelope{ID: uuid.New(), AggregateID: "order-7", AggregateType: "order", OccurredAt: at.Add(time.Hour)},
		OrderID: "order-7", Carrier: "Pigeon Post"}
	if err := ob.InTx(ctx, pool, func(context.Context, pgx.Tx) ([]bus.Event, error) {
		return []bus.Event{placed, shipped}, nil
	}); err != nil {
		t.Fatal(err)
	}
	db := []string{"--database-url", url}

	r := mustCLI(t, append([]string{"tail", "--from-start"}, db...)...)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := []string{
		"2026-03-04T05:06:07.000Z lane=0 shop.order.placed/v2 order=order-7 id=" + placed.env.ID.String() +
			` {"order_id":"order-7","total_cents":1250,"items":[{"sku":"tea-42"}]}`,
		"2026-03-04T06:06:07.000Z lane=0 shop.parcel.shipped/v1 order=order-7 id=" + shipped.env.ID.String() +
			` {"order_id":"order-7","carrier":"Pigeon Post"}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("tail --from-start:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("tail line %d:\n got %s\nwant %s", i, lines[i], want[i])
		}
	}

	// --pretty: the payload indented under its event.
	r = mustCLI(t, append([]string{"tail", "--from-start", "--pretty", "-n", "1"}, db...)...)
	if !strings.Contains(r.stdout, "shop.parcel.shipped/v1 order=order-7 id="+shipped.env.ID.String()+"\n  {\n    \"order_id\": \"order-7\",\n    \"carrier\": \"Pigeon Post\"\n  }\n") {
		t.Errorf("tail --pretty:\n%s", r.stdout)
	}

	// --json: the payload as JSON, no error.
	r = mustCLI(t, append([]string{"tail", "--from-start", "--json"}, db...)...)
	var evs []tailEvent
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		var ev tailEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("tail --json line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 2 || evs[0].Error != "" || evs[0].Name != "shop.order.placed" || evs[0].Version != 2 || evs[0].AggregateType != "order" ||
		evs[0].Topic != "shop.order.placed" || evs[1].Name != "shop.parcel.shipped" {
		t.Fatalf("tail --json: %+v", evs)
	}
	var total struct {
		Total int `json:"total_cents"`
	}
	if err := json.Unmarshal(evs[0].Payload, &total); err != nil || total.Total != 1250 {
		t.Errorf("tail --json payload %s: %v", evs[0].Payload, err)
	}

	// A dead letter of it, as the relay stores one: dlq show decodes the
	// event inside.
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_dead_letters (lane, message_uuid, event_name, aggregate_id, payload, metadata, error, attempts, first_failed_at)
		SELECT lane, uuid, metadata->>'event_name', metadata->>'aggregate_id', convert_to(payload::text, 'UTF8'), metadata::jsonb, 'broker said no', 3, now()
		FROM eventbus_outbox WHERE uuid = $1`, placed.env.ID.String()); err != nil {
		t.Fatal(err)
	}
	r = mustCLI(t, append([]string{"dlq", "show", "1"}, db...)...)
	if !strings.Contains(r.stdout, "Event (decoded from the payload):\n  2026-03-04T05:06:07.000Z lane=0 shop.order.placed/v2 order=order-7 id="+
		placed.env.ID.String()+` {"order_id":"order-7","total_cents":1250,"items":[{"sku":"tea-42"}]}`) {
		t.Errorf("dlq show:\n%s", r.stdout)
	}
	r = mustCLI(t, append([]string{"dlq", "show", "1", "--json"}, db...)...)
	var shown deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Event == nil || shown.Event.Error != "" || shown.Event.Name != "shop.order.placed" || shown.Event.Version != 2 ||
		!bytes.Contains(rawJSON(shown.Event.Payload), []byte(`"sku":"tea-42"`)) {
		t.Errorf("dlq show --json: %+v", shown.Event)
	}
}

// TestTailWithARegistry: an application that plugs its registry in gets its
// events decoded into their types (and says which events it does not
// know); the command works the same without.
func TestTailWithARegistry(t *testing.T) {
	t.Parallel()
	url, pool, ob := migrated(t, 1)
	evs := scenario(2)
	publish(t, pool, ob, evs...)
	unknownID := uuid.NewString()
	insertRaw(t, pool, unknownID, fmt.Sprintf(`{"destination_topic":"shop.order.placed","uuid":%q,"payload":"eyJvcmRlcl9pZCI6IjEifQ==","metadata":{"event_name":"shop.order.placed","event_version":"2","aggregate_id":"1"}}`,
		unknownID), `{"event_name": "shop.order.placed"}`)
	for _, registry := range []*bus.Registry{nil, gen.Registry()} {
		var stdout, stderr bytes.Buffer
		a := &app{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, registry: registry}
		if code := a.main(context.Background(), []string{"tail", "--from-start", "--database-url", url}); code != exitOK {
			t.Fatalf("tail: exit %d: %s", code, stderr.String())
		}
		lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], evs[0].EventName()+"/v1") || !strings.Contains(lines[1], evs[1].EventName()+"/v1") {
			t.Fatalf("tail with registry %v:\n%s", registry != nil, stdout.String())
		}
		unknown := strings.Contains(lines[2], "(unknown event: printed raw)")
		if !strings.Contains(lines[2], `shop.order.placed/v2 aggregate=1 id=`+unknownID) || !strings.HasSuffix(lines[2], ` {"order_id":"1"}`) ||
			unknown != (registry != nil) {
			t.Errorf("tail with registry %v: the event the registry does not know: %s", registry != nil, lines[2])
		}
	}
}
