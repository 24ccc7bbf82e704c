package input

// Upper uses capitals.
//
//eventbus:event name=Shop.Order.Placed aggregate=ID
type Upper struct{ ID string }

// Single has one segment.
//
//eventbus:event name=placed aggregate=ID
type Single struct{ ID string }

// Empty has an empty segment.
//
//eventbus:event name=shop..placed aggregate=ID
type Empty struct{ ID string }

// Digit starts a segment with a digit.
//
//eventbus:event name=shop.2fa.enabled aggregate=ID
type Digit struct{ ID string }

// Dash uses a dash.
//
//eventbus:event name=shop.order-line.added aggregate=ID
type Dash struct{ ID string }
