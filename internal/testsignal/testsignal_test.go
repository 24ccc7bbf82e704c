package testsignal

import (
	"fmt"
	"strings"
	"testing"
)

// fakeTB records failures instead of failing the test.
type fakeTB struct {
	errors []string
	fatal  bool
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	f.fatal = true
}

func TestZeroValueIgnoresSignals(t *testing.T) {
	var s TestSignal[int]
	s.Signal(1) // must not block or panic
}

func TestSignalThenWait(t *testing.T) {
	var s TestSignal[string]
	s.Init(t)
	s.Signal("a")
	s.Signal("b")
	if got := s.WaitOrTimeout(); got != "a" {
		t.Fatalf("first = %q", got)
	}
	if got := <-s.C(); got != "b" {
		t.Fatalf("second = %q", got)
	}
	s.RequireEmpty()
}

func TestFullBufferAndLeftoverFail(t *testing.T) {
	var s TestSignal[int]
	tb := &fakeTB{}
	s.Init(tb)
	for i := range capacity + 1 {
		s.Signal(i)
	}
	if len(tb.errors) != 1 || !strings.Contains(tb.errors[0], "full") {
		t.Fatalf("errors after overfilling: %q", tb.errors)
	}
	tb.errors = nil
	s.RequireEmpty()
	if len(tb.errors) != 1 || !strings.Contains(tb.errors[0], "unexpected signal 0") {
		t.Fatalf("RequireEmpty on a pending signal: %q", tb.errors)
	}
}
