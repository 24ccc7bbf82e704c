package natsbroker

import (
	"fmt"
	"hash/fnv"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"orders":                "orders",
		"t1234_pulse":           "t1234_pulse",
		"edupulse.pulse":        "edupulse_pulse_" + hash("edupulse.pulse"),
		"edupulse_pulse":        "edupulse_pulse",
		"edupulse.pulse.create": "edupulse_pulse_create_" + hash("edupulse.pulse.create"),
	} {
		if got := streamName(in); got != want {
			t.Errorf("streamName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := streamName("edupulse.pulse"); got != "edupulse_pulse_4addafbf" { // as the package doc says
		t.Errorf("streamName(edupulse.pulse) = %q", got)
	}
	if a, b := consumerName("g", "a.b"), consumerName("g", "a_b"); a == b {
		t.Errorf("consumer names collide: %q", a)
	}
	for in, want := range map[string]string{"": "_", "3f2a-11": "3f2a-11", "a.b*c>d e": "a_b_c_d_e"} {
		if got := token(in); got != want {
			t.Errorf("token(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"", "a..b", ".a", "a.", "a.*", "a.>", "a b"} {
		if validSubject(bad) == nil {
			t.Errorf("validSubject(%q) = nil, want an error", bad)
		}
	}
}

func hash(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

func TestUnmarshalTolerant(t *testing.T) {
	m := nats.NewMsg("x.y")
	m.Header["event_name"] = []string{"a", "b"}
	m.Data = []byte("{}")
	msg, err := unmarshaler{}.Unmarshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if msg.UUID == "" || msg.Metadata.Get("event_name") != "a" {
		t.Fatalf("got uuid %q metadata %v", msg.UUID, msg.Metadata)
	}
}
