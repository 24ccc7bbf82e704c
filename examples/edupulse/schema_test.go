package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/edupulse/eventbus/internal/pgtest"
)

// TestPublishedEventsMatchSchemas runs the scenario, then validates every
// event it published (each outbox row, chained BadgeAwarded included, both
// versions of PulseAnswered) against the JSON Schema that go generate wrote
// for its name and version (gen/schemas), and its metadata against the
// headers of its message in gen/asyncapi.json.
func TestPublishedEventsMatchSchemas(t *testing.T) {
	cfg, err := parseFlags([]string{"-students", "6", "-answers", "4", "-pulses", "3", "-lessons", "2", "-progress=false"}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	cfg.BrokerURL = "gochannel://"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, "SELECT uuid, payload, metadata FROM eventbus_outbox ORDER BY transaction_id, \"offset\"")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	schemas := map[string]*jsonschema.Schema{}
	headers := map[string]*jsonschema.Schema{}
	api := readJSONFile(t, filepath.Join("..", "..", "gen", "asyncapi.json")).(map[string]any)
	messages := api["components"].(map[string]any)["messages"].(map[string]any)
	perKind := map[string]int{}
	for rows.Next() {
		var rowID string
		var row []byte
		if err := rows.Scan(&rowID, &row, new(any)); err != nil {
			t.Fatal(err)
		}
		// The row holds the forwarder's envelope: the message the relay
		// publishes, with its topic.
		var env struct {
			UUID     string            `json:"uuid"`
			Payload  []byte            `json:"payload"`
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(row, &env); err != nil {
			t.Fatalf("outbox row %s: %v", rowID, err)
		}
		id, payload, meta := env.UUID, env.Payload, env.Metadata
		key := fmt.Sprintf("%s.v%s", meta["event_name"], meta["event_version"])
		perKind[key]++
		sch, ok := schemas[key]
		if !ok {
			sch = compileFile(t, filepath.Join("..", "..", "gen", "schemas", key+".schema.json"))
			schemas[key] = sch
			msg, _ := messages[key].(map[string]any)
			if msg == nil {
				t.Fatalf("gen/asyncapi.json has no message %s", key)
			}
			headers[key] = compileDoc(t, "mem:///"+key+"/headers", msg["headers"])
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("%s %s: payload %s does not match its schema: %v", key, id, payload, err)
		}
		h := map[string]any{"_watermill_message_uuid": id}
		for k, v := range meta {
			h[k] = v
		}
		if err := headers[key].Validate(h); err != nil {
			t.Errorf("%s %s: metadata %v does not match the AsyncAPI headers: %v", key, id, meta, err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// 6 students x 4 answers: the fourth of each as version 1; a badge
	// every 3 answers.
	for key, want := range map[string]int{
		"edupulse.pulse.created.v1": 3, "edupulse.lesson.published.v1": 2,
		"edupulse.pulse.answered.v1": 6, "edupulse.pulse.answered.v2": 18, "edupulse.badge.awarded.v1": 6,
	} {
		if perKind[key] != want {
			t.Errorf("%d %s events in the outbox, want %d (all: %v)", perKind[key], key, want, perKind)
		}
	}
}

func readJSONFile(t *testing.T, name string) any {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func compileFile(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	return compileDoc(t, "file:///"+filepath.ToSlash(name), readJSONFile(t, name))
}

// compileDoc compiles a schema, asserting formats (uuid, date-time).
func compileDoc(t *testing.T, url string, doc any) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compile %s: %v", url, err)
	}
	return sch
}
