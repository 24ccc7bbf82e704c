package input

// A is declared first.
//
//eventbus:event name=app.thing.happened aggregate=ID
type A struct{ ID string }

// C is another version of the same name: fine.
//
//eventbus:event name=app.thing.happened version=2 aggregate=ID
type C struct{ ID string }
