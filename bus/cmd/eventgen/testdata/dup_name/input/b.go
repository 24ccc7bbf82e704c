package input

// B reuses A's name and version.
//
//eventbus:event name=app.thing.happened version=1 aggregate=ID
type B struct{ ID string }
