// Package input declares the events of the lock_kinds golden case.
package input

// Alpha happened. It is declared after the lock was written, and sorts
// first: it gets the next free Kind number, no other event is renumbered.
//
//eventbus:event name=test.alpha.happened aggregate=ID
type Alpha struct {
	ID string `json:"id"`
}

// Beta happened.
//
//eventbus:event name=test.beta.happened aggregate=ID
type Beta struct {
	ID string `json:"id"`
}

// Gamma happened.
//
//eventbus:event name=test.gamma.happened aggregate=ID
type Gamma struct {
	ID string `json:"id"`
}
