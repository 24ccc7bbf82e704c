package broker_test

import (
	"errors"
	"testing"

	"github.com/edupulse/eventbus/bus/broker"
)

type closer struct {
	closes int
	err    error
}

func (c *closer) Close() error { c.closes++; return c.err }

func TestSubscribers(t *testing.T) {
	var set broker.Subscribers
	errBusy, errGone := errors.New("busy"), errors.New("already gone")
	a, b := &closer{err: errBusy}, &closer{err: errGone}
	for _, c := range []*closer{a, b} {
		if got, err := broker.Track(&set, func() (*closer, error) { return c, nil }); err != nil || got != c {
			t.Fatalf("Track = %v, %v", got, err)
		}
	}
	if _, err := broker.Track(&set, func() (*closer, error) { return nil, errBusy }); !errors.Is(err, errBusy) {
		t.Fatalf("Track of a failing constructor = %v", err)
	}
	already, err := set.Close(func(err error) bool { return errors.Is(err, errGone) })
	if already || !errors.Is(err, errBusy) || errors.Is(err, errGone) {
		t.Fatalf("Close = %v, %v; want errBusy only", already, err)
	}
	if already, err := set.Close(nil); !already || err != nil {
		t.Fatalf("second Close = %v, %v; want already closed", already, err)
	}
	if a.closes != 1 || b.closes != 1 {
		t.Fatalf("closes = %d, %d; want 1 each", a.closes, b.closes)
	}
	made := false
	if _, err := broker.Track(&set, func() (*closer, error) { made = true; return &closer{}, nil }); !errors.Is(err, broker.ErrClosed) || made {
		t.Fatalf("Track after Close = %v (made %v), want ErrClosed without making one", err, made)
	}
}
