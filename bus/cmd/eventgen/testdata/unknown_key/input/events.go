package input

// Unknown has a key the generator does not know.
//
//eventbus:event name=app.thing.unknown aggregate=ID topic=things
type Unknown struct{ ID string }

// Twice gives name twice.
//
//eventbus:event name=app.thing.twice name=app.thing.again aggregate=ID
type Twice struct{ ID string }

// Bare has an argument without a value.
//
//eventbus:event name=app.thing.bare aggregate=ID deprecated
type Bare struct{ ID string }

// EmptyType has an empty aggregate_type and Capital an invalid one.
//
//eventbus:event name=app.thing.empty aggregate=ID aggregate_type=
type EmptyType struct{ ID string }

// Capital has an invalid aggregate_type.
//
//eventbus:event name=app.thing.capital aggregate=ID aggregate_type=Thing
type Capital struct{ ID string }
