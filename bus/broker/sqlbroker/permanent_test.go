package sqlbroker_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// TestPermanentErrors publishes what PostgreSQL refuses for good, and
// checks each error is marked permanent, and an outage's is not.
func TestPermanentErrors(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	b, err := broker.Open(ctx, dbURL, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	msg := func(payload string) *message.Message { return message.NewMessage(uuid.NewString(), []byte(payload)) }
	for _, topic := range []string{"fine", "checked"} {
		if err := b.Publisher().Publish(topic, msg(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	role := "reader_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	for _, q := range []string{
		`ALTER TABLE watermill_checked ADD CONSTRAINT small CHECK (octet_length(payload::text) < 100)`,
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT CREATE ON SCHEMA public TO ` + role, // the table exists: the INSERT is refused
		`GRANT SELECT ON watermill_fine TO ` + role,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE "+role) })
	u, _ := url.Parse(dbURL)
	u.User = url.User(role)
	reader, err := broker.Open(ctx, u.String(), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	for _, tc := range []struct {
		name  string
		b     broker.Broker
		topic string
		msg   *message.Message
		want  string
	}{
		{"payload not JSON", b, "fine", msg(`not json`), "22P02"},
		{"bytes not UTF-8", b, "fine", msg("\"\xff\""), "22021"},
		{"check constraint", b, "checked", msg(`"` + strings.Repeat("x", 200) + `"`), "23514"},
		{"invalid topic name", b, "bad topic!", msg(`{}`), "topic name should not contain"},
		{"write denied", reader, "fine", msg(`{}`), "permission denied for table watermill_fine (SQLSTATE 42501)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.b.Publisher().Publish(tc.topic, tc.msg)
			t.Log(err)
			if !bus.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}

	// A closed broker is not the message's fault.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	err = b.Publisher().Publish("fine", msg(`{}`))
	if err == nil || bus.IsPermanent(err) {
		t.Errorf("publish on a closed broker: %v, want a transient error", err)
	}
}
