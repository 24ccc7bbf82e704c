package main

// The relay command opens any broker adapter by URL scheme.
import _ "github.com/edupulse/eventbus/bus/broker/all"
