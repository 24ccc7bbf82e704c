// Package input declares the events of the basic golden case: nested
// types, several aggregate id types, two versions of one event and field
// names that need care as parameter names.
package input

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// OrderPlaced: a customer placed an order.
//
//eventbus:event name=shop.order.placed aggregate=OrderID
type OrderPlaced struct {
	OrderID    uuid.UUID         `json:"order_id"`
	CustomerID uuid.UUID         `json:"customer_id"`
	Lines      []LineItem        `json:"lines"`
	Shipping   *Address          `json:"shipping,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
	PlacedAt   time.Time         `json:"placed_at"`
	Raw        json.RawMessage   `json:"raw,omitempty"`
}

// OrderPlacedV2 is the second version of shop.order.placed. It carries the
// total.
//
//eventbus:event name=shop.order.placed version=2 aggregate=OrderID aggregate_type=order
type OrderPlacedV2 struct {
	OrderID uuid.UUID  `json:"order_id"`
	Total   Money      `json:"total"`
	Lines   []LineItem `json:"lines"`
}

// UpcastOrderPlaced converts version 1 of shop.order.placed into version
// 2, whose total is the sum of the lines.
//
//eventbus:upcast
func UpcastOrderPlaced(v1 OrderPlaced) (OrderPlacedV2, error) {
	var total Money
	for _, l := range v1.Lines {
		if total.Currency != "" && l.Price.Currency != total.Currency {
			return OrderPlacedV2{}, errors.New("lines in several currencies")
		}
		total.Currency = l.Price.Currency
		total.Cents += l.Price.Cents * int64(l.Quantity)
	}
	return OrderPlacedV2{OrderID: v1.OrderID, Total: total, Lines: v1.Lines}, nil
}

// InvoiceIssued is emitted when an invoice is issued.
//
//eventbus:event name=shop.billing.invoice_issued aggregate=Number aggregate_type=invoice
type InvoiceIssued struct {
	Number int64       `json:"number"`
	Counts map[int]int `json:"counts"`
	Matrix [2][3]float64
	Due    *time.Time `json:"due,omitempty"`
}

// stock moved in or out of the warehouse; the id is an unsigned integer of
// a named type.
//
//eventbus:event name=shop.stock.moved aggregate=SKU
type StockMoved struct {
	SKU    SKU    `json:"sku"`
	Delta  int32  `json:"delta"`
	Type   string `json:"type"`
	E      string `json:"e"`
	Input  string `json:"input"`
	String string `json:"string"`
	Meta
}

// SKU identifies a stock keeping unit.
type SKU uint32

// LineItem is one line of an order.
type LineItem struct {
	SKU      SKU        `json:"sku"`
	Quantity int        `json:"quantity"`
	Price    Money      `json:"price"`
	Parts    []LineItem `json:"parts,omitempty"`
}

// Money is an amount in cents.
type Money struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

// Address is a postal address.
type Address struct {
	Street string                 `json:"street"`
	Geo    Pair[float64, float64] `json:"geo"`
}

// Pair is a generic pair.
type Pair[K, V any] struct {
	Key   K `json:"key"`
	Value V `json:"value"`
}

// Meta is embedded in events.
type Meta struct {
	Source string `json:"source"`
}
