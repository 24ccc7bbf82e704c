package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestGuarantees(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), pgtest.NewDatabase(t), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := `1. a rolled-back transaction publishes nothing
  InTx: validation failed; outbox rows: 0
2. a committed transaction is relayed and consumed
  consumer: applied "Intro to Topology"
3. a redelivered event is skipped by the inbox
  applied 1 time(s), duplicates skipped: 1
4. a malformed outbox row is dead-lettered; later events still flow
  consumer: applied "After the poison"
  dead letter #1 after 2 attempts: malformed outbox row: no destination_topic
done
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
