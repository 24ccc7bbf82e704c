package bus

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

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

// ErrLanesChanged is wrapped by the error of a Publish made while
// schema.Migrate added lanes. The Outbox has read the new number: roll the
// transaction back and run it again; InTx does.
var ErrLanesChanged = errors.New("the number of outbox lanes changed: run the transaction again")

// IsRetryable reports whether running the failed transaction again may
// succeed: err wraps ErrLanesChanged, or PostgreSQL reported a
// serialization failure (SQLSTATE 40001) or a deadlock (40P01).
func IsRetryable(err error) bool {
	if errors.Is(err, ErrLanesChanged) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}
