package input

// NoAggregate has no aggregate key.
//
//eventbus:event name=app.thing.happened
type NoAggregate struct{ ID string }

// NoName has no name key.
//
//eventbus:event aggregate=ID
type NoName struct{ ID string }

// Empty has no keys at all.
//
//eventbus:event
type Empty struct{ ID string }
