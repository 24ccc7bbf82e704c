package bus

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// UnknownVersionPolicy says what a consumer does with an event it cannot
// hand to a handler although it may be meant to: an event whose name or
// version is not in its registry (a producer runs a newer events package
// than the consumer: the consumer cannot tell whether its own next version
// will handle it), and a version its registry holds but no handler takes,
// of a name it has typed handlers for in other versions. An event of a name
// the registry holds and the consumer handles in no version is not for it,
// and is acked whatever the policy (a consumer on a shared topic sees such
// events all the time); an OnAny or OnAnyTx handler takes every event the
// registry holds. A message that cannot be decoded for another reason (a
// malformed envelope or payload) is poison, and always dead-lettered.
type UnknownVersionPolicy string

const (
	// UnknownVersionDeadLetter dead-letters the message at once, with a
	// reason wrapping ErrUnknownVersion or ErrUnknownEvent; it can be
	// replayed once a consumer handles the version. The default.
	UnknownVersionDeadLetter UnknownVersionPolicy = "dead-letter"
	// UnknownVersionRetry nacks the message after a pause (BackoffInitial,
	// doubling with each delivery of the message up to BackoffMax), so that
	// the broker delivers it again, to this consumer or another of its
	// group, until one that handles the version takes it: for a rolling
	// deploy in which producers were updated first. Meanwhile the message
	// holds back those behind it on brokers that deliver in order.
	UnknownVersionRetry UnknownVersionPolicy = "retry"
	// UnknownVersionSkip acks the message without handling it, logs a
	// warning and counts it in ConsumerStats.Skipped: for versions the
	// consumer means to ignore.
	UnknownVersionSkip UnknownVersionPolicy = "skip"
)

// UnknownVersionDefault is the policy of a ConsumerConfig that sets none.
const UnknownVersionDefault = UnknownVersionDeadLetter

// AllUnknownVersionPolicyValues returns the valid policies.
func AllUnknownVersionPolicyValues() []UnknownVersionPolicy {
	return []UnknownVersionPolicy{UnknownVersionDeadLetter, UnknownVersionRetry, UnknownVersionSkip}
}

// Valid reports whether p is one of the policies.
func (p UnknownVersionPolicy) Valid() bool {
	switch p {
	case UnknownVersionDeadLetter, UnknownVersionRetry, UnknownVersionSkip:
		return true
	}
	return false
}

// retryLaterError asks the retry middleware to nack the message after a
// backoff (UnknownVersionRetry).
type retryLaterError struct{ err error }

func (e retryLaterError) Error() string { return e.err.Error() }
func (e retryLaterError) Unwrap() error { return e.err }

// errSkipped is returned by dispatch for a message skipped under
// UnknownVersionSkip: handle acks it without counting it as handled.
var errSkipped = errors.New("bus: event skipped")

// unknownEvent applies the consumer's UnknownVersionPolicy to a message it
// wants but has no handler for; cause wraps ErrUnknownVersion or
// ErrUnknownEvent.
func (c *Consumer) unknownEvent(name string, version int, uuid string, cause error) error {
	switch c.cfg.UnknownVersion {
	case UnknownVersionRetry:
		return retryLaterError{cause}
	case UnknownVersionSkip:
		c.skipped.Add(1)
		c.cfg.Logger.Warn("Skipped an event this consumer has no handler for (UnknownVersionSkip)",
			"consumer_group", c.cfg.Group, "uuid", uuid, "event_name", name, "event_version", version, "reason", cause.Error())
		return errSkipped
	default:
		return Permanent(cause)
	}
}

// undecodable decides what becomes of a message the registry cannot
// decode: an event whose name or version the registry does not hold, from
// a producer newer than the consumer, follows the UnknownVersionPolicy (nil
// when it is skipped); anything else is poison.
func (c *Consumer) undecodable(msg *message.Message, err error) error {
	var de *DecodeError
	if !errors.As(err, &de) || !(errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrUnknownEvent)) {
		return Permanent(err)
	}
	err = c.unknownEvent(de.Name, de.Version, msg.UUID, fmt.Errorf("consumer %s: %w", c.cfg.Group, err))
	if errors.Is(err, errSkipped) {
		return nil
	}
	return err
}
