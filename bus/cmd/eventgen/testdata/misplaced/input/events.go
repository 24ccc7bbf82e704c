package input

// Code is not a struct.
//
//eventbus:event name=app.code.set aggregate=ID
type Code int

// hidden is unexported.
//
//eventbus:event name=app.hidden.seen aggregate=ID
type hidden struct{ ID string }

// Generic has a type parameter.
//
//eventbus:event name=app.generic.made aggregate=ID
type Generic[T any] struct {
	ID    string
	Value T
}

// Alias is an alias.
//
//eventbus:event name=app.alias.made aggregate=ID
type Alias = Other

// Other is the target of Alias.
type Other struct{ ID string }

// Reserved has fields and methods that the wrapper would shadow.
//
//eventbus:event name=app.reserved.made aggregate=ID
type Reserved struct {
	ID       string
	Kind     string
	Reserved string
	Base
}

// EventName would be shadowed by the wrapper's.
func (Reserved) EventName() string { return "x" }

// Base is embedded in Reserved.
type Base struct {
	Envelope string
}

// Twice has two directives.
//
//eventbus:event name=app.twice.made aggregate=ID
//eventbus:event name=app.twice.again aggregate=ID
type Twice struct{ ID string }

//eventbus:event name=app.func.called aggregate=ID
func Helper() {}

// Misspelled has a misspelled directive.
//
//eventbus:evnt name=app.misspelled.made aggregate=ID
type Misspelled struct{ ID string }

var _ = hidden{}

// UpcastArgs has arguments in its directive.
//
//eventbus:upcast from=1
func UpcastArgs(o Other) Other { return o }

// Misplaced carries an upcast directive.
//
//eventbus:upcast
type Misplaced struct{}
