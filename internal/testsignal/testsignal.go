// Package testsignal lets tests wait for points in concurrent code, in the
// way of riverqueue's testsignal: a service carries TestSignal fields and
// signals them at meaningful points (a batch deleted, a pass finished).
// Outside tests the signals are never initialised and Signal does nothing;
// a test calls Init and then waits with WaitOrTimeout instead of sleeping or
// polling a counter, which keeps it reliable on a loaded machine.
package testsignal

import "time"

// WaitTimeoutDefault bounds WaitOrTimeout. It is long because only a bug
// makes a wait time out, and a loaded machine can be slow.
const WaitTimeoutDefault = 30 * time.Second

// capacity is the number of signals a TestSignal buffers before Signal
// reports a test failure.
const capacity = 100

// TB is the part of testing.TB a signal needs, so that this package does
// not import testing.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// TestSignal is a buffered channel that code signals into and tests wait
// on. Its zero value ignores signals.
type TestSignal[T any] struct {
	ch chan T
	tb TB
}

// Init makes the signal record values for tb. Call it from tests only,
// before the code under test runs.
func (s *TestSignal[T]) Init(tb TB) {
	s.ch = make(chan T, capacity)
	s.tb = tb
}

// Signal records val for a test waiting on the signal. It never blocks: if
// the signal was not initialised it does nothing, and if its buffer is full
// it fails the test.
func (s *TestSignal[T]) Signal(val T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- val:
	default:
		s.tb.Errorf("testsignal: buffer of %d full: the test does not wait for every signal", capacity)
	}
}

// WaitOrTimeout returns the next signalled value, or stops the test with a
// failure after WaitTimeoutDefault. Call it from the test's goroutine.
func (s *TestSignal[T]) WaitOrTimeout() T {
	s.tb.Helper()
	if s.ch == nil {
		panic("testsignal: WaitOrTimeout on a signal not initialised")
	}
	t := time.NewTimer(WaitTimeoutDefault)
	defer t.Stop()
	select {
	case v := <-s.ch:
		return v
	case <-t.C:
		s.tb.Fatalf("testsignal: no signal within %s", WaitTimeoutDefault)
		panic("unreachable")
	}
}

// C returns the signal's channel, for a test that waits on several
// signals at once.
func (s *TestSignal[T]) C() <-chan T {
	if s.ch == nil {
		panic("testsignal: C on a signal not initialised")
	}
	return s.ch
}

// RequireEmpty fails the test if a value was signalled and not waited for.
func (s *TestSignal[T]) RequireEmpty() {
	s.tb.Helper()
	select {
	case v := <-s.ch:
		s.tb.Errorf("testsignal: unexpected signal %v", v)
	default:
	}
}
