package bus

import "errors"

// permanentError marks an error that retrying will not fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: publishing the same message again will
// fail the same way (the payload is too large for the broker, the broker
// rejects it for good, the outbox row is malformed). The relay retries a
// permanent failure RelayConfig.MaxAttempts times and then moves the event
// to the dead-letter table; any other error is taken for an outage and
// retried, with backoff, until it goes away. Broker adapters wrap the errors
// they know to be permanent. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
