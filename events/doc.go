// Package events declares the EduPulse domain events, once, as plain Go
// structs. Everything else about them is generated into package gen by
// `go generate ./...`: constructors, the sealed Event sum type and its Kind
// discriminator, exhaustive handler dispatch, the codec registry that the
// bus runtime uses, and sqlc queries over the outbox.
//
// # Declaring an event
//
// Mark a struct with a directive comment:
//
//	//eventbus:event name=edupulse.pulse.created version=1 aggregate=PulseID aggregate_type=pulse
//	type PulseCreated struct { ... }
//
// The keys:
//   - name (required): the stable wire name, lowercase dot-separated words
//     of [a-z0-9_], such as "edupulse.pulse.created". It never changes once
//     events are stored; rename the Go type freely instead.
//   - version (optional, default 1): the payload version, an integer >= 1.
//   - aggregate (required): the field holding the aggregate id; a
//     uuid.UUID, a string or an integer field.
//   - aggregate_type (optional): the kind of aggregate, lowercase; defaults
//     to the wire name's second-to-last segment ("pulse" above).
//
// Fields are encoded as JSON with encoding/json, so use json tags. The
// generator refuses what cannot be encoded and decoded faithfully:
// channels, functions, complex numbers, interfaces, unexported fields (at
// any depth) and maps whose keys are not strings or integers. It also
// refuses fields or methods named EventName, EventVersion, Envelope or Kind,
// which the generated wrapper defines.
//
// # What is generated
//
// In package gen: events_gen.go (a wrapper and a constructor per event,
// Event, Kind, Handler, UnhandledEvents, Dispatch, Registry) and
// queries_gen.go (typed wrappers over the sqlc queries); in gen/queries, one
// .sql file of sqlc queries per event, which sqlc compiles into
// gen/outboxq. A Kind's String is the wire name, with "@vN" appended for
// versions above 1, so that two versions of one name stay distinct.
package events

//go:generate go run github.com/edupulse/eventbus/internal/eventgen -out ../gen -queries ../gen/queries -sqlc-package github.com/edupulse/eventbus/gen/outboxq -sqlc-out ../gen/outboxq -schemas ../gen/schemas -asyncapi ../gen/asyncapi.json
//go:generate go tool -modfile=../internal/tools/go.mod sqlc generate -f ../sqlc.yaml
