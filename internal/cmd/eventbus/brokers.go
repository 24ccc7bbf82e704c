package main

// The broker adapters the relay command can open, by URL scheme.
import (
	_ "github.com/edupulse/eventbus/bus/broker/amqpbroker"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"
	_ "github.com/edupulse/eventbus/bus/broker/kafkabroker"
	_ "github.com/edupulse/eventbus/bus/broker/natsbroker"
	_ "github.com/edupulse/eventbus/bus/broker/redisbroker"
	_ "github.com/edupulse/eventbus/bus/broker/sqlbroker"
)
