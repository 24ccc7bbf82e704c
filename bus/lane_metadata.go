package bus

import (
	"encoding/json"
	"fmt"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// UnmarshalMessage implements watermill-sql's SchemaAdapter: it reads a row
// as DefaultPostgreSQLSchema does. Metadata that is a flat JSON object of
// plain strings (ASCII without escapes, as Outbox.Publish writes it for
// ordinary ids and names) is read without encoding/json, whose decoding
// was a tenth of the relay's CPU (bench profile, GoChannel sink); any other
// metadata is left to encoding/json, as before. Both give the same map (a
// fuzz test compares them).
func (s KeysetSchema) UnmarshalMessage(row wsql.Scanner) (wsql.Row, error) {
	r, transactionID, err := scanLaneRow(row)
	if err != nil {
		return wsql.Row{}, err
	}
	r.ExtraData = map[string]any{"transaction_id": transactionID}
	return r, nil
}

// scanLaneRow reads a row of KeysetSchema's SELECT: the row, without
// ExtraData, and its transaction id.
func scanLaneRow(row wsql.Scanner) (wsql.Row, int64, error) {
	r := wsql.Row{}
	var transactionID int64
	if err := row.Scan(&r.Offset, &transactionID, &r.UUID, &r.Payload, &r.Metadata); err != nil {
		return wsql.Row{}, 0, fmt.Errorf("could not scan message row: %w", err)
	}
	msg := message.NewMessage(string(r.UUID), r.Payload)
	if r.Metadata != nil && !decodeFlatStrings(r.Metadata, msg.Metadata) {
		clear(msg.Metadata)
		if err := json.Unmarshal(r.Metadata, &msg.Metadata); err != nil {
			return wsql.Row{}, 0, fmt.Errorf("could not unmarshal metadata as JSON: %w", err)
		}
	}
	r.Msg = msg
	return r, transactionID, nil
}

// decodeFlatStrings adds the entries of b, a JSON object whose keys and
// values are plain strings, to into and reports true; for anything else it
// reports false (into may then hold some of the entries).
func decodeFlatStrings(b []byte, into map[string]string) bool {
	i := skipJSONSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipJSONSpace(b, i+1) == len(b)
	}
	for {
		k, next, ok := plainJSONString(b, i)
		if !ok {
			return false
		}
		i = skipJSONSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		v, next, ok := plainJSONString(b, skipJSONSpace(b, i+1))
		if !ok {
			return false
		}
		into[k] = v
		i = skipJSONSpace(b, next)
		switch {
		case i >= len(b):
			return false
		case b[i] == ',':
			i = skipJSONSpace(b, i+1)
		case b[i] == '}':
			return skipJSONSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// plainJSONString reads the JSON string at b[i] if it holds only printable
// ASCII without escapes, and returns it and the index after it.
func plainJSONString(b []byte, i int) (s string, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return "", 0, false
		}
	}
	return "", 0, false
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON white space.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
