// Package input declares the events of the upcast golden case: a chain of
// three versions with an upcaster per step (the first returning an
// error), and a chain whose first version is retired.
package input

import (
	"errors"
	"strings"
)

// NoteV1: a note was added, as a single line.
//
//eventbus:event name=test.note.added aggregate=ID
type NoteV1 struct {
	ID   string `json:"id"`
	Line string `json:"line"`
}

// NoteV2: a note was added, with a title.
//
//eventbus:event name=test.note.added version=2 aggregate=ID
type NoteV2 struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Body  string `json:"body"`
}

// Note: a note was added, with a title and tags.
//
//eventbus:event name=test.note.added version=3 aggregate=ID
type Note struct {
	ID    string   `json:"id"`
	Title string   `json:"title"`
	Body  string   `json:"body"`
	Tags  []string `json:"tags,omitempty"`
}

// UpcastNoteV1 splits the line into a title and a body.
//
//eventbus:upcast
func UpcastNoteV1(n NoteV1) (NoteV2, error) {
	title, body, ok := strings.Cut(n.Line, ": ")
	if !ok {
		return NoteV2{}, errors.New("no title")
	}
	return NoteV2{ID: n.ID, Title: title, Body: body}, nil
}

// UpcastNoteV2 adds no tags.
//
//eventbus:upcast
func UpcastNoteV2(n NoteV2) Note {
	return Note{ID: n.ID, Title: n.Title, Body: n.Body}
}

// PingV1: a ping was sent. No event of this version exists any more.
//
//eventbus:event name=test.ping.sent aggregate=ID retired
type PingV1 struct {
	ID string `json:"id"`
}

// PingV2: a ping was sent, with a text.
//
//eventbus:event name=test.ping.sent version=2 aggregate=ID
type PingV2 struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// Ping: a ping was sent, with its words.
//
//eventbus:event name=test.ping.sent version=3 aggregate=ID
type Ping struct {
	ID    string   `json:"id"`
	Words []string `json:"words"`
}

// UpcastPingV2 splits the text into words.
//
//eventbus:upcast
func UpcastPingV2(p PingV2) Ping {
	return Ping{ID: p.ID, Words: strings.Fields(p.Text)}
}
