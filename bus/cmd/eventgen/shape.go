package main

import (
	"cmp"
	"go/types"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// shape is the JSON shape of a Go type as encoding/json writes it: what the
// schema lock records and compares, and what the JSON Schemas describe.
type shape struct {
	// Type is one of string, integer, number, boolean, array, map,
	// object, or any (a type with its own MarshalJSON, whose shape
	// eventgen cannot see).
	Type string `json:"type"`
	// Format refines a string: uuid, date-time, or base64 ([]byte).
	Format string `json:"format,omitempty"`
	// Unsigned marks an integer that is never negative.
	Unsigned bool `json:"unsigned,omitempty"`
	// Nullable marks a value that may be null: a pointer, slice or map.
	Nullable bool `json:"nullable,omitempty"`
	// Length is the length of a fixed-size array.
	Length int `json:"length,omitempty"`
	// Keys is the JSON form of a map's keys: string, or integer (written
	// as decimal strings).
	Keys string `json:"keys,omitempty"`
	// Items is the shape of an array's elements or a map's values.
	Items *shape `json:"items,omitempty"`
	// Struct names the Go struct type of an object, for the schemas'
	// definitions; informational in the lock.
	Struct string `json:"struct,omitempty"`
	// Ref marks a recursive use of Struct, defined further up; it has no
	// fields of its own.
	Ref bool `json:"ref,omitempty"`
	// Fields are an object's members, in encoding order.
	Fields []*field `json:"fields,omitempty"`
	// GoType names the Go type of an any shape (or of a string that a
	// type writes itself with MarshalText).
	GoType string `json:"go_type,omitempty"`
}

// field is one member of a JSON object.
type field struct {
	// Name is the JSON name.
	Name string `json:"name"`
	// GoName is the Go field's name (a dotted path for fields promoted from
	// embedded structs).
	GoName string `json:"go_name"`
	// Optional marks a member the encoder may leave out: its tag says
	// omitempty or omitzero, or it is promoted through an embedded pointer.
	Optional bool `json:"optional,omitempty"`
	shape
}

// shaper computes shapes, naming struct types relative to the events
// package.
type shaper struct {
	pkg *types.Package
}

func (s *shaper) qualifier(p *types.Package) string {
	if p == s.pkg {
		return ""
	}
	return p.Name()
}

// eventShape returns the JSON shape of an event's payload.
func (s *shaper) eventShape(ev *event) shape {
	return s.shapeOf(ev.named, nil)
}

// shapeOf returns the shape of t. stack holds the named struct types being
// expanded, to stop on recursive types.
func (s *shaper) shapeOf(t types.Type, stack []*types.Named) shape {
	t = types.Unalias(t)
	if n, ok := t.(*types.Named); ok {
		obj := n.Obj()
		path := ""
		if obj.Pkg() != nil {
			path = obj.Pkg().Path()
		}
		switch {
		case path == "time" && obj.Name() == "Time":
			return shape{Type: "string", Format: "date-time"}
		case path == "github.com/google/uuid" && obj.Name() == "UUID":
			return shape{Type: "string", Format: "uuid"}
		case path == "encoding/json" && obj.Name() == "Number":
			return shape{Type: "number"}
		case hasMethod(n, "MarshalJSON"):
			return shape{Type: "any", GoType: types.TypeString(n, s.qualifier)}
		case hasMethod(n, "MarshalText"):
			return shape{Type: "string", GoType: types.TypeString(n, s.qualifier)}
		}
		if st, ok := n.Underlying().(*types.Struct); ok {
			name := types.TypeString(n, s.qualifier)
			if slices.Contains(stack, n) {
				return shape{Type: "object", Struct: name, Ref: true}
			}
			return shape{Type: "object", Struct: name, Fields: s.fields(st, append(stack, n))}
		}
	}
	switch u := t.Underlying().(type) {
	case *types.Basic:
		info := u.Info()
		switch {
		case info&types.IsBoolean != 0:
			return shape{Type: "boolean"}
		case info&types.IsInteger != 0:
			return shape{Type: "integer", Unsigned: info&types.IsUnsigned != 0}
		case info&types.IsFloat != 0:
			return shape{Type: "number"}
		case info&types.IsString != 0:
			return shape{Type: "string"}
		}
	case *types.Pointer:
		sh := s.shapeOf(u.Elem(), stack)
		sh.Nullable = true
		return sh
	case *types.Slice:
		if b, ok := types.Unalias(u.Elem()).(*types.Basic); ok && b.Kind() == types.Byte {
			return shape{Type: "string", Format: "base64", Nullable: true}
		}
		if n, ok := types.Unalias(u.Elem()).(*types.Named); ok && isByte(n) && !hasMethod(n, "MarshalJSON") && !hasMethod(n, "MarshalText") {
			return shape{Type: "string", Format: "base64", Nullable: true}
		}
		items := s.shapeOf(u.Elem(), stack)
		return shape{Type: "array", Nullable: true, Items: &items}
	case *types.Array:
		items := s.shapeOf(u.Elem(), stack)
		return shape{Type: "array", Length: int(u.Len()), Items: &items}
	case *types.Map:
		keys := "string"
		if b, ok := types.Unalias(u.Key()).Underlying().(*types.Basic); ok && b.Info()&types.IsInteger != 0 {
			keys = "integer"
			if n, ok := types.Unalias(u.Key()).(*types.Named); ok && hasMethod(n, "MarshalText") {
				keys = "string"
			}
		}
		items := s.shapeOf(u.Elem(), stack)
		return shape{Type: "map", Keys: keys, Nullable: true, Items: &items}
	case *types.Struct:
		return shape{Type: "object", Fields: s.fields(u, stack)}
	}
	return shape{Type: "any", GoType: types.TypeString(t, s.qualifier)}
}

func isByte(n *types.Named) bool {
	b, ok := n.Underlying().(*types.Basic)
	return ok && b.Kind() == types.Byte
}

// hasMethod reports whether T or *T has the named method, as
// encoding/json looks for its interfaces on addressable values.
func hasMethod(t types.Type, name string) bool {
	return types.NewMethodSet(types.NewPointer(t)).Lookup(nil, name) != nil ||
		types.NewMethodSet(t).Lookup(nil, name) != nil
}

// jsonField is a candidate member of an object, before encoding/json's
// rules for embedded structs pick the visible ones.
type jsonField struct {
	name     string
	goName   string
	tagged   bool
	index    []int
	typ      types.Type
	optional bool
	quoted   bool
}

// fields returns the members of a struct's JSON object, following
// encoding/json: tag names, "-", omitempty and omitzero, the string option,
// and the fields of untagged embedded structs promoted, the shallowest (or
// the only tagged one among equals) winning a name.
func (s *shaper) fields(st *types.Struct, stack []*types.Named) []*field {
	var all []jsonField
	var walk func(st *types.Struct, index []int, prefix string, optional bool, seen []*types.Struct)
	walk = func(st *types.Struct, index []int, prefix string, optional bool, seen []*types.Struct) {
		if slices.Contains(seen, st) {
			return
		}
		seen = append(seen, st)
		for i := range st.NumFields() {
			f := st.Field(i)
			tag := reflect.StructTag(st.Tag(i)).Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(index), i)
			ft := types.Unalias(f.Type())
			if f.Embedded() {
				elem, viaPtr := ft, false
				if p, ok := ft.Underlying().(*types.Pointer); ok {
					if _, named := ft.(*types.Named); !named {
						elem, viaPtr = types.Unalias(p.Elem()), true
					}
				}
				if !f.Exported() {
					if _, ok := elem.Underlying().(*types.Struct); !ok {
						continue
					}
				}
				if inner, ok := elem.Underlying().(*types.Struct); ok && name == "" {
					walk(inner, idx, prefix+f.Name()+".", optional || viaPtr, seen)
					continue
				}
			} else if !f.Exported() {
				continue
			}
			tagged := name != ""
			if !tagged {
				name = f.Name()
			}
			all = append(all, jsonField{
				name: name, goName: prefix + f.Name(), tagged: tagged, index: idx, typ: f.Type(),
				optional: optional || hasOption(opts, "omitempty") || hasOption(opts, "omitzero"),
				quoted:   hasOption(opts, "string"),
			})
		}
	}
	walk(st, nil, "", false, nil)

	// Dominance: per name, the shallowest fields; among several, the only
	// tagged one; otherwise none.
	slices.SortStableFunc(all, func(a, b jsonField) int {
		return cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(len(a.index), len(b.index)), boolOrder(a.tagged, b.tagged))
	})
	var visible []jsonField
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && all[j].name == all[i].name {
			j++
		}
		group := all[i:j]
		i = j
		depth := len(group[0].index)
		var top []jsonField
		for _, f := range group {
			if len(f.index) == depth {
				top = append(top, f)
			}
		}
		switch {
		case len(top) == 1:
			visible = append(visible, top[0])
		case top[0].tagged && !top[1].tagged:
			visible = append(visible, top[0])
		}
	}
	slices.SortFunc(visible, func(a, b jsonField) int { return slices.Compare(a.index, b.index) })

	out := make([]*field, 0, len(visible))
	for _, f := range visible {
		sh := s.shapeOf(f.typ, stack)
		if f.quoted && (sh.Type == "integer" || sh.Type == "number" || sh.Type == "boolean" || sh.Type == "string") {
			sh = shape{Type: "string", Nullable: sh.Nullable}
		}
		out = append(out, &field{Name: f.name, GoName: f.goName, Optional: f.optional, shape: sh})
	}
	return out
}

func hasOption(opts, option string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == option {
			return true
		}
	}
	return false
}

// boolOrder sorts true before false.
func boolOrder(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// describe returns a shape's type for messages: "string (uuid)", "array of
// integer", "nullable object".
func (sh *shape) describe() string {
	var b strings.Builder
	if sh.Nullable {
		b.WriteString("nullable ")
	}
	if sh.Unsigned {
		b.WriteString("unsigned ")
	}
	switch sh.Type {
	case "array":
		if sh.Length > 0 {
			b.WriteString("array of " + strconv.Itoa(sh.Length) + " ")
		} else {
			b.WriteString("array of ")
		}
		b.WriteString(sh.Items.describe())
	case "map":
		b.WriteString("map of " + sh.Items.describe())
		if sh.Keys == "integer" {
			b.WriteString(" by integer")
		}
	case "any":
		b.WriteString("value encoded by " + sh.GoType + ".MarshalJSON")
	default:
		b.WriteString(sh.Type)
	}
	if sh.Format != "" {
		b.WriteString(" (" + sh.Format + ")")
	}
	return b.String()
}
