package broker

import (
	"errors"
	"io"
	"sync"
)

// ErrClosed is returned by Track once the Subscribers set is closed.
var ErrClosed = errors.New("broker closed")

// Subscribers keeps what a Broker hands out from Subscriber, so that its
// Close closes each of them once. Adapters hold one; the zero value is
// ready.
type Subscribers struct {
	mu      sync.Mutex
	closed  bool
	closers []io.Closer
}

// Track makes a subscriber with newSub and keeps it, unless the set is
// closed. newSub runs under the set's lock, so that Close never misses a
// subscriber being made.
func Track[S io.Closer](s *Subscribers, newSub func() (S, error)) (S, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		var zero S
		return zero, ErrClosed
	}
	sub, err := newSub()
	if err != nil {
		return sub, err
	}
	s.closers = append(s.closers, sub)
	return sub, nil
}

// Close closes every subscriber kept, once; ignore, if not nil, drops the
// errors it reports true for. It returns the subscribers' errors joined,
// and whether the set was already closed (then it does nothing).
func (s *Subscribers) Close(ignore func(error) bool) (alreadyClosed bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true, nil
	}
	s.closed = true
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range closers {
		if err := c.Close(); err != nil && (ignore == nil || !ignore(err)) {
			errs = append(errs, err)
		}
	}
	return false, errors.Join(errs...)
}
