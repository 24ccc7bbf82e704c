package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// asyncAPISchemaID is the $id of the vendored AsyncAPI 3.0.0 JSON Schema.
const asyncAPISchemaID = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"

// asyncAPISchema compiles the vendored AsyncAPI 3.0.0 JSON Schema
// (testdata/asyncapi-3.0.0, from the npm package @asyncapi/specs), offline.
func asyncAPISchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc := readJSON(t, filepath.Join("testdata", "asyncapi-3.0.0", "asyncapi.json"))
	c := jsonschema.NewCompiler()
	if err := c.AddResource(asyncAPISchemaID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(asyncAPISchemaID)
	if err != nil {
		t.Fatalf("compile the AsyncAPI 3.0.0 schema: %v", err)
	}
	return sch
}

func readJSON(t *testing.T, name string) any {
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

// generatedAsyncAPI returns the AsyncAPI documents of the golden cases and
// of this module's events (gen/asyncapi.json).
func generatedAsyncAPI(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("testdata/*/want/asyncapi.json")
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join("..", "..", "..", "gen", "asyncapi.json"))
	if len(docs) < 3 {
		t.Fatalf("found only %v", docs)
	}
	return docs
}

// TestAsyncAPIDocuments validates every generated AsyncAPI document
// against the AsyncAPI 3.0.0 JSON Schema, checks that each local $ref
// resolves, and checks that the schema refuses broken documents (so that
// the validation is not vacuous).
func TestAsyncAPIDocuments(t *testing.T) {
	t.Parallel()
	sch := asyncAPISchema(t)
	for _, name := range generatedAsyncAPI(t) {
		doc := readJSON(t, name)
		if err := sch.Validate(doc); err != nil {
			t.Errorf("%s is not a valid AsyncAPI 3.0.0 document: %v", name, err)
		}
		checkRefs(t, name, doc, doc)
	}

	broken := map[string]func(doc map[string]any){
		"no info version": func(doc map[string]any) { delete(doc["info"].(map[string]any), "version") },
		"AsyncAPI 2 action": func(doc map[string]any) {
			for _, op := range doc["operations"].(map[string]any) {
				op.(map[string]any)["action"] = "publish"
			}
		},
		"address not a string": func(doc map[string]any) {
			for _, ch := range doc["channels"].(map[string]any) {
				ch.(map[string]any)["address"] = 7
			}
		},
		"invalid payload schema": func(doc map[string]any) {
			schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
			for _, s := range schemas {
				s.(map[string]any)["type"] = "strnig"
			}
		},
	}
	for what, breakIt := range broken {
		doc := readJSON(t, filepath.Join("testdata", "basic", "want", "asyncapi.json")).(map[string]any)
		breakIt(doc)
		if err := sch.Validate(doc); err == nil {
			t.Errorf("a document with %s validated", what)
		}
	}
}

// checkRefs fails for a local $ref that does not resolve in root.
func checkRefs(t *testing.T, name string, root, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok && strings.HasPrefix(ref, "#/") {
			if _, ok := resolvePointer(root, strings.TrimPrefix(ref, "#/")); !ok {
				t.Errorf("%s: $ref %s does not resolve", name, ref)
			}
		}
		for _, x := range v {
			checkRefs(t, name, root, x)
		}
	case []any:
		for _, x := range v {
			checkRefs(t, name, root, x)
		}
	}
}

func resolvePointer(root any, pointer string) (any, bool) {
	cur := root
	for _, tok := range strings.Split(pointer, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// compileSchema compiles a generated JSON Schema file; compiling checks it
// against the draft 2020-12 meta-schema.
func compileSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	doc := readJSON(t, name)
	if m, ok := doc.(map[string]any); !ok || m["$schema"] != jsonSchemaDialect || m["$comment"] != jsonNotice {
		t.Errorf("%s: want $schema %s and the generated notice", name, jsonSchemaDialect)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	url := "file:///" + filepath.ToSlash(name)
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("%s does not compile as a draft 2020-12 schema: %v", name, err)
	}
	return sch
}

// TestJSONSchemasCompile compiles every generated JSON Schema, of the
// golden cases and of this module's events.
func TestJSONSchemasCompile(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*/want/schemas/*.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Glob(filepath.Join("..", "..", "..", "gen", "schemas", "*.schema.json"))
	if err != nil || len(repo) != len(gen.AllKinds()) {
		t.Fatalf("gen/schemas holds %d schemas, want one per kind (%d): %v", len(repo), len(gen.AllKinds()), err)
	}
	for _, name := range append(files, repo...) {
		compileSchema(t, name)
	}
}

// TestSchemasValidateEvents encodes one event of each EduPulse kind as the
// outbox does and validates its payload against the event version's JSON
// Schema and its headers against the AsyncAPI message's; edited payloads
// that break the declaration must fail.
func TestSchemasValidateEvents(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	evs := []gen.Event{
		gen.NewBadgeAwarded(uuid.New(), uuid.New(), "3 answers", at),
		gen.NewLessonPublished(uuid.New(), uuid.New(), "Fractions", at),
		gen.NewPulseAnswered(uuid.New(), uuid.New(), uuid.New(), at),
		gen.NewPulseAnsweredV2(uuid.New(), uuid.New(), uuid.New(), false, at),
		gen.NewPulseCreated(uuid.New(), uuid.New(), "How much is 3/4 of 12?", at),
	}
	if len(evs) != len(gen.AllKinds()) {
		t.Fatalf("%d sample events for %d kinds", len(evs), len(gen.AllKinds()))
	}
	api := readJSON(t, filepath.Join("..", "..", "..", "gen", "asyncapi.json")).(map[string]any)
	messages := api["components"].(map[string]any)["messages"].(map[string]any)
	for _, ev := range evs {
		t.Run(ev.Kind().String(), func(t *testing.T) {
			msg, err := gen.Registry().NewMessage(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			sch := compileSchema(t, filepath.Join("..", "..", "..", "gen", "schemas", schemaFileName(ev.EventName(), ev.EventVersion())))
			payload := decodeInstance(t, msg.Payload)
			if err := sch.Validate(payload); err != nil {
				t.Errorf("payload %s does not validate: %v", msg.Payload, err)
			}
			for what, edit := range map[string]func(m map[string]any){
				"a required member missing": func(m map[string]any) {
					for k := range m {
						delete(m, k)
						return
					}
				},
				"a uuid that is not one":     func(m map[string]any) { m[firstKey(m, "_id")] = "not-a-uuid" },
				"a number for a string":      func(m map[string]any) { m[firstKey(m, "_id")] = 12 },
				"a date that is not RFC3339": func(m map[string]any) { m[firstKey(m, "_at")] = "yesterday" },
			} {
				bad := decodeInstance(t, msg.Payload).(map[string]any)
				edit(bad)
				if err := sch.Validate(bad); err == nil {
					t.Errorf("payload with %s validated: %v", what, bad)
				}
			}

			// The headers, as a broker adapter writes them: the metadata and
			// the Watermill message UUID.
			key := messageKey(ev.EventName(), ev.EventVersion())
			m, ok := messages[key].(map[string]any)
			if !ok {
				t.Fatalf("the AsyncAPI document has no message %s", key)
			}
			headers := map[string]any{headerMessageUUID: msg.UUID}
			for k, v := range msg.Metadata {
				headers[k] = v
			}
			hs := compileValue(t, m["headers"])
			if err := hs.Validate(headers); err != nil {
				t.Errorf("headers %v do not validate: %v", headers, err)
			}
			headers[headerVersion] = "9"
			if err := hs.Validate(headers); err == nil {
				t.Errorf("headers of another version validated")
			}
		})
	}
}

func firstKey(m map[string]any, suffix string) string {
	for _, k := range []string{"pulse_id", "badge_id", "lesson_id", "answered_at", "awarded_at", "published_at"} {
		if _, ok := m[k]; ok && strings.HasSuffix(k, suffix) {
			return k
		}
	}
	panic(fmt.Sprintf("no member ending in %s in %v", suffix, m))
}

func decodeInstance(t *testing.T, data []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// compileValue compiles a schema held in a decoded document.
func compileValue(t *testing.T, v any) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("mem:///schema.json", v); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mem:///schema.json")
	if err != nil {
		data, _ := json.Marshal(v)
		t.Fatalf("compile %s: %v", data, err)
	}
	return sch
}

// TestHeaderNames checks the header names of the AsyncAPI document against
// the bus package's metadata keys and the broker adapters' message UUID
// header.
func TestHeaderNames(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		headerName:               bus.MetadataName,
		headerVersion:            bus.MetadataVersion,
		headerAggregateID:        bus.MetadataAggregateID,
		headerAggregateType:      bus.MetadataAggregateType,
		headerOccurredAt:         bus.MetadataOccurredAt,
		headerTraceParent:        bus.MetadataTraceParent,
		headerMessageUUID:        kafka.UUIDHeaderKey,
		headerMessageUUID + " ":  nats.WatermillUUIDHdr + " ",
		headerMessageUUID + "  ": amqp.DefaultMessageUUIDHeaderKey + "  ",
	} {
		if got != want {
			t.Errorf("header %q, want bus's %q", got, want)
		}
	}
}
