// Package all registers every broker adapter shipped with eventbus, for
// programs that take any broker URL (the eventbus CLI, the EduPulse
// example). Applications that use one broker import only its adapter.
//
//	import _ "github.com/edupulse/eventbus/bus/broker/all"
package all

import (
	_ "github.com/edupulse/eventbus/bus/broker/amqpbroker"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"
	_ "github.com/edupulse/eventbus/bus/broker/kafkabroker"
	_ "github.com/edupulse/eventbus/bus/broker/natsbroker"
	_ "github.com/edupulse/eventbus/bus/broker/redisbroker"
	_ "github.com/edupulse/eventbus/bus/broker/sqlbroker"
)
