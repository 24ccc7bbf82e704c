package input

// Zero has version 0.
//
//eventbus:event name=app.thing.zero version=0 aggregate=ID
type Zero struct{ ID string }

// Word has a version that is not a number.
//
//eventbus:event name=app.thing.word version=two aggregate=ID
type Word struct{ ID string }

// Negative has a negative version.
//
//eventbus:event name=app.thing.negative version=-1 aggregate=ID
type Negative struct{ ID string }

// Prefixed writes v2.
//
//eventbus:event name=app.thing.prefixed version=v2 aggregate=ID
type Prefixed struct{ ID string }
