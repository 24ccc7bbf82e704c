// Package bus is an events package whose name collides with the runtime's
// package, and whose fields use types of other packages.
package bus

import (
	"net/netip"
	"time"
)

// PingSent: a ping was sent.
//
//eventbus:event name=net.ping.sent aggregate=Seq aggregate_type=ping
type PingSent struct {
	Seq     uint64        `json:"seq"`
	Addr    netip.Addr    `json:"addr"`
	Timeout time.Duration `json:"timeout"`
	Bus     string        `json:"bus"`
	Strconv string        `json:"strconv"`
}
