// Package input declares broken version chains and upcasters.
package input

// GapV1 has a version 3 but no version 2.
//
//eventbus:event name=test.gap.made aggregate=ID retired
type GapV1 struct{ ID string }

// Gap is version 3.
//
//eventbus:event name=test.gap.made version=3 aggregate=ID
type Gap struct{ ID string }

// MissingV1 has no upcaster to version 2.
//
//eventbus:event name=test.missing.made aggregate=ID
type MissingV1 struct{ ID string }

// Missing is version 2.
//
//eventbus:event name=test.missing.made version=2 aggregate=ID
type Missing struct{ ID string }

// Lonely is the latest version, retired.
//
//eventbus:event name=test.lonely.made aggregate=ID retired
type Lonely struct{ ID string }

// BothV1 is retired and has an upcaster.
//
//eventbus:event name=test.both.made aggregate=ID retired=true
type BothV1 struct{ ID string }

// Both is version 2.
//
//eventbus:event name=test.both.made version=2 aggregate=ID
type Both struct{ ID string }

// UpcastBoth converts a retired version.
//
//eventbus:upcast
func UpcastBoth(b BothV1) Both { return Both(b) }

// SkipV1 is converted straight into version 3.
//
//eventbus:event name=test.skip.made aggregate=ID retired
type SkipV1 struct{ ID string }

// SkipV2 is version 2.
//
//eventbus:event name=test.skip.made version=2 aggregate=ID retired
type SkipV2 struct{ ID string }

// Skip is version 3.
//
//eventbus:event name=test.skip.made version=3 aggregate=ID
type Skip struct{ ID string }

// UpcastSkip skips version 2.
//
//eventbus:upcast
func UpcastSkip(s SkipV1) Skip { return Skip(s) }

// UpcastAcross converts between two events.
//
//eventbus:upcast
func UpcastAcross(m MissingV1) Lonely { return Lonely(m) }

// UpcastTwoArgs takes two events.
//
//eventbus:upcast
func UpcastTwoArgs(a, b MissingV1) Missing { return Missing(a) }

// UpcastNotEvent takes a plain struct.
//
//eventbus:upcast
func UpcastNotEvent(p Plain) Missing { return Missing(p) }

// upcastHidden is unexported.
//
//eventbus:upcast
func upcastHidden(m MissingV1) Missing { return Missing(m) }

// Plain is not an event.
type Plain struct{ ID string }

// Method is an upcaster declared as a method.
//
//eventbus:upcast
func (Plain) Method(m MissingV1) Missing { return Missing(m) }
