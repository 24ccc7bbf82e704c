package input

import (
	"bytes"
	"unsafe"
)

// Bad holds one field of each refused kind.
//
//eventbus:event name=app.thing.bad aggregate=ID
type Bad struct {
	ID      string
	Ch      chan int
	Fn      func() error
	Any     any
	Err     error
	Complex complex128
	Ptr     unsafe.Pointer
	Keys    map[Key]string
	Hooks   []func()
	secret  string
	Items   []Item
	Nested  struct{ Done chan bool }
	Buf     bytes.Buffer
	Inner   *Inner
	Readers map[string]interface{ Read([]byte) (int, error) }
	Fine    map[uint16][]*string
}

// Bad2 uses Item again: its problems are reported once.
//
//eventbus:event name=app.thing.bad2 aggregate=ID
type Bad2 struct {
	ID    int
	Items [3]Item
}

// Key is a struct, which JSON cannot use as an object key.
type Key struct{ A, B int }

// Item has problems of its own.
type Item struct {
	Name     string
	callback func()
	note     string
	Sub      *Item
}

type inner struct{ X int }

// Inner is exported but embeds an unexported type.
type Inner struct {
	inner
	Y int
}
