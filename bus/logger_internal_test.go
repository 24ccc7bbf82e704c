package bus

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// The relay's Watermill logger writes what Watermill's SlogLoggerAdapter
// wrote (Info at Debug, Trace below Debug, With's fields and the error
// with every record) and nothing for a level the handler leaves out.
func TestWatermillLoggerRecords(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	l := newWatermillLogger(slog.New(h).With("component", "relay"))

	l.Trace("routed", watermill.LogFields{"uuid": "1"})
	msgLogger := l.With(watermill.LogFields{"lane": 2, "handler": "fwd"}).With(nil).With(watermill.LogFields{"uuid": "7"})
	msgLogger.Trace("routed", nil)
	msgLogger.Info("subscriber started", watermill.LogFields{"topic": "t"})
	msgLogger.Debug("acked", nil)
	msgLogger.Error("publish failed", errors.New("broker down"), watermill.LogFields{"attempt": 3})

	want := strings.Join([]string{
		`level=DEBUG msg="subscriber started" component=relay handler=fwd lane=2 uuid=7 topic=t`,
		`level=DEBUG msg=acked component=relay handler=fwd lane=2 uuid=7`,
		`level=ERROR msg="publish failed" component=relay handler=fwd lane=2 uuid=7 attempt=3 error="broker down"`,
	}, "\n") + "\n"
	if got := buf.String(); got != want {
		t.Fatalf("logged:\n%s\nwant:\n%s", got, want)
	}

	buf.Reset()
	trace := newWatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: watermill.LevelTrace})))
	trace.With(watermill.LogFields{"lane": 0}).Trace("routed", nil)
	if !strings.Contains(buf.String(), `msg=routed lane=0`) {
		t.Fatalf("a trace-level handler got %q", buf.String())
	}
}
