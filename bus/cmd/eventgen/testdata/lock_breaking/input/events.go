// Package input declares the events of the lock_breaking golden case.
package input

import "time"

// Order placed.
//
//eventbus:event name=test.order.placed aggregate=ID
type Order struct {
	ID       string    `json:"id"`
	Customer string    `json:"customer_id"`
	Total    string    `json:"total"`
	Note     string    `json:"note"`
	At       time.Time `json:"at"`
}
