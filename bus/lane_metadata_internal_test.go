package bus

import (
	"encoding/json"
	"maps"
	"testing"
)

// The relay reads a row's metadata as encoding/json does: when
// decodeFlatStrings takes it, encoding/json takes it too and gives the
// same map; and it takes the metadata Outbox.Publish writes.
func FuzzDecodeFlatStrings(f *testing.F) {
	for _, s := range []string{
		`{"aggregate_id":"b96fe7cc-03b1-4623-be52-05f0b9f57eb7","aggregate_type":"pulse","event_name":"edupulse.pulse.answered","event_version":"1","occurred_at":"2026-12-02T06:30:28.355603365Z"}`,
		`{}`, ` { "a" : "b" , "c":"d" } `, `{"a":"b","a":"c"}`, `{"a":1}`, `{"a":"\u00e9"}`, `{"a":"é"}`,
		`{"a":"b"`, `{"a":"b"}x`, `null`, `[]`, `{"a":null}`, `{,}`, `{"a":"b",}`, "{\"a\":\"\x01\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := map[string]string{}
		if !decodeFlatStrings(b, got) {
			return
		}
		var want map[string]string
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("decodeFlatStrings took %q, encoding/json refuses it: %v", b, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%q: decodeFlatStrings %v, encoding/json %v", b, got, want)
		}
	})
}

func TestDecodeFlatStringsTakesPublishedMetadata(t *testing.T) {
	t.Parallel()
	m := map[string]string{}
	b := []byte(`{"aggregate_id":"b96fe7cc-03b1-4623-be52-05f0b9f57eb7","event_name":"x","traceparent":"00-0102-01"}`)
	if !decodeFlatStrings(b, m) || len(m) != 3 || m["traceparent"] != "00-0102-01" {
		t.Fatalf("decodeFlatStrings(%s) = %v", b, m)
	}
}
