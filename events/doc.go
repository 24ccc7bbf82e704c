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
// Two more keys, written bare (or key=true), mark a version's place in its
// event's history:
//   - retired: no upcaster leads from this version to the next one (see
//     below); its events reach only handlers of this very version. Retire a
//     version once none of its events is stored or in flight any more.
//   - unreleased: the version was never released, so the schema lock
//     accepts any change to it. Remove the key when it ships.
//
// A field is optional when its tag says omitempty or omitzero (the encoder
// may leave it out, so readers must cope with its absence); every other
// field is required. A pointer, slice or map may be null.
//
// # Changing an event: versions and upcasters
//
// A released event version never changes in a way that payloads already
// stored would not survive (see the schema lock below). To change its
// shape, declare the next version, a new struct with the same name and
// version+1, and an upcaster: an exported function of this package that
// converts the previous version into it, marked with the upcast directive:
//
//	//eventbus:event name=edupulse.pulse.answered version=2 aggregate=PulseID
//	type PulseAnsweredV2 struct { ... }
//
//	//eventbus:upcast
//	func UpcastPulseAnswered(v1 PulseAnswered) PulseAnsweredV2 { ... }
//
// An upcaster takes one version and returns the next, func(Old) New or
// func(Old) (New, error); the signature says which versions it converts.
// The generator chains them: every version but the latest needs an
// upcaster to the next one, unless it is retired, and versions form a
// chain without gaps (versions 1 and 3 without a 2 are refused). Name the Go
// types as you like: keeping the released name and suffixing the new one
// (PulseAnsweredV2) keeps existing producers compiling, publishing version
// 1 until they move; renaming the old one (PulseAnsweredV1) makes every
// producer move at once. The wire name and version are what count.
//
// Consumers convert at decode time: a typed handler (bus.On, bus.OnTx) of
// version n also receives the events of earlier versions that upcasters
// lead to n, converted, with their envelope (id, aggregate, time) kept, so
// the inbox recognises a redelivery either way. A handler registered for an
// earlier version still receives exactly that version. The exhaustive
// Handler has one method per event, at its latest version, and Dispatch
// converts earlier versions first. A failing upcaster, or a version that a
// retired one separates from the handled version, dead-letters the
// message. An upcaster converts one event into exactly one: splitting an
// event into several, or dropping it, is not supported, because the inbox
// and the broker's acknowledgement both count in events of one id; declare
// a new event and handle the old version explicitly instead.
//
// # The schema lock
//
// go generate writes eventbus.lock.json beside these files: for each event
// version, its JSON shape (field names, JSON types, optional or required,
// nested types), its aggregate, and its Kind number. Commit it. Kind
// numbers come from the lock, so declaring an event never renumbers
// another, and a removed event's number is not reused.
//
// On the next run, a change to a locked version that old payloads would not
// survive fails go generate, and so CI, with an error naming the event, the
// field and the change: removing a field or renaming it or its json tag,
// changing its JSON type (an integer may widen to a number, a value may
// become nullable), making an optional field required or adding a
// required one, changing the aggregate field or the aggregate type, and
// removing an event version. Adding an optional field, an event or a
// version is compatible. To change a version deliberately, because it was
// never released, mark it unreleased, or run eventgen once with
// -accept-breaking NAME@VERSION (a comma-separated list; only the versions
// listed are accepted); the lock then records the new shape.
//
// # What is generated
//
// In package gen: events_gen.go (a wrapper and a constructor per event,
// Event, Kind, Handler, UnhandledEvents, Dispatch, Registry, with the
// upcasters registered) and queries_gen.go (typed wrappers over the sqlc
// queries); in gen/queries, one .sql file of sqlc queries per event, which
// sqlc compiles into gen/outboxq; in gen/schemas, a JSON Schema (draft
// 2020-12) of each event version's payload; gen/asyncapi.json, an AsyncAPI
// 3.0 document with a channel per topic (one per wire name, the outbox's
// default routing), a message per event version with its payload schema and
// headers (the envelope: event id, name, version, aggregate, time,
// traceparent), for services in other languages. A Kind's String is the
// wire name, with "@vN" appended for versions above 1, so that two versions
// of one name stay distinct.
package events

// The generator is a module of its own (bus/cmd/eventgen); the repository's
// go.work makes it runnable from here. sqlc is pinned in another module,
// internal/tools, which is deliberately not in go.work (its dependencies
// would otherwise join every workspace build); go tool -modfile refuses
// workspace mode, hence GOWORK=off for that one command.
//
//go:generate go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../gen -queries ../gen/queries -sqlc-package github.com/edupulse/eventbus/gen/outboxq -sqlc-out ../gen/outboxq -schemas ../gen/schemas -asyncapi ../gen/asyncapi.json
//go:generate env GOWORK=off go tool -modfile=../internal/tools/go.mod sqlc generate -f ../sqlc.yaml
