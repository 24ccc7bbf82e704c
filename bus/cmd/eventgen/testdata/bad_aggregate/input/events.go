package input

import "github.com/google/uuid"

// Missing names a field that does not exist.
//
//eventbus:event name=app.thing.missing aggregate=Nope
type Missing struct{ ID string }

// Float has a float aggregate id.
//
//eventbus:event name=app.thing.floated aggregate=Score
type Float struct{ Score float64 }

// Pointer has a pointer aggregate id.
//
//eventbus:event name=app.thing.pointed aggregate=ID
type Pointer struct{ ID *uuid.UUID }

// Lowercase names the field by its JSON name.
//
//eventbus:event name=app.thing.lowered aggregate=id
type Lowercase struct {
	ID string `json:"id"`
}
