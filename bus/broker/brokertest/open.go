package brokertest

import (
	"context"
	"strings"
	"testing"

	"github.com/edupulse/eventbus/bus/broker"
)

// OpenFailure is a broker URL that must not open, and a word its error
// must contain.
type OpenFailure struct {
	URL  string
	Want string
}

// RunOpenFailures checks that each URL fails to open with an error naming
// what is wrong, and that no error reveals secret (the URLs' password).
func RunOpenFailures(ctx context.Context, t *testing.T, secret string, cases []OpenFailure) {
	t.Helper()
	for _, tc := range cases {
		b, err := broker.Open(ctx, tc.URL, broker.Options{})
		if err == nil {
			b.Close()
			t.Fatalf("Open(%s) succeeded", broker.Redact(tc.URL))
		}
		t.Logf("Open(%s): %v", broker.Redact(tc.URL), err)
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error reveals the password: %v", err)
		}
		if !strings.Contains(err.Error(), tc.Want) {
			t.Errorf("Open(%s) = %v, want it to mention %q", broker.Redact(tc.URL), err, tc.Want)
		}
	}
}
