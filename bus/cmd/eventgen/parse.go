package main

import (
	"cmp"
	"errors"
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/tools/go/packages"
)

const (
	directivePrefix = "//eventbus:"
	eventDirective  = "//eventbus:event"
	upcastDirective = "//eventbus:upcast"
)

var (
	wireNameRE      = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	aggregateTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	directiveKeys   = []string{"aggregate", "aggregate_type", "name", "retired", "unreleased", "version"}
	// boolKeys are the directive keys that take true or false; a bare key
	// means true.
	boolKeys = []string{"retired", "unreleased"}
)

// wrapperNames are the names the generated wrapper type declares itself; a
// field or method of the events struct with one of these names would be
// shadowed by the wrapper.
var wrapperNames = []string{"EventName", "EventVersion", "Envelope", "Kind", "MarshalJSON"}

// aggregateKind says how an aggregate id field is formatted as a string.
type aggregateKind int

const (
	aggregateUUID aggregateKind = iota
	aggregateString
	aggregateSigned
	aggregateUnsigned
)

// event is one declared event type.
type event struct {
	GoName         string // name of the struct in the events package
	WireName       string
	Version        int
	AggregateField string
	AggregateType  string
	aggregateKind  aggregateKind
	aggregateConv  string // conversion to apply before formatting, or ""
	Fields         []*types.Var
	Doc            string // first sentence of the struct's doc comment
	// Retired marks a version without an upcaster to the next one: its
	// events reach only handlers of this very version.
	Retired bool
	// Unreleased marks a version never released: the schema lock records
	// its shape but accepts any change to it.
	Unreleased bool
	// Upcast is the upcaster from this version to the next, or nil.
	Upcast *upcaster
	named  *types.Named
	pos    token.Position
}

// posError is a problem at a position of the source.
type posError struct {
	pos token.Position // Filename already relative to the base directory
	msg string
}

func (e *posError) Error() string {
	if e.pos.Filename == "" {
		return e.msg
	}
	if e.pos.Line == 0 {
		return e.pos.Filename + ": " + e.msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.pos.Filename, e.pos.Line, e.pos.Column, e.msg)
}

// collector finds and validates the event declarations of a package,
// collecting every problem.
type collector struct {
	pkg     *packages.Package
	baseDir string
	errs    []*posError
	checked map[*types.Named]bool // named structs of the package already checked
}

func (c *collector) position(p token.Pos) token.Position {
	pos := c.pkg.Fset.Position(p)
	if pos.Filename != "" && c.baseDir != "" {
		if rel, err := filepath.Rel(c.baseDir, pos.Filename); err == nil {
			pos.Filename = filepath.ToSlash(rel)
		}
	}
	return pos
}

func (c *collector) errorf(p token.Pos, format string, args ...any) {
	c.errorAt(c.position(p), format, args...)
}

func (c *collector) errorAt(pos token.Position, format string, args ...any) {
	e := &posError{pos: pos, msg: fmt.Sprintf(format, args...)}
	for _, prev := range c.errs {
		if *prev == *e {
			return
		}
	}
	c.errs = append(c.errs, e)
}

// err returns every problem found, ordered by position, or nil.
func (c *collector) err() error { return joinSorted(c.errs) }

// joinSorted joins errors ordered by position (stably), or returns nil.
func joinSorted(perrs []*posError) error {
	if len(perrs) == 0 {
		return nil
	}
	perrs = slices.Clone(perrs)
	slices.SortStableFunc(perrs, func(a, b *posError) int {
		return cmp.Or(
			strings.Compare(a.pos.Filename, b.pos.Filename),
			cmp.Compare(a.pos.Line, b.pos.Line),
			cmp.Compare(a.pos.Column, b.pos.Column),
		)
	})
	errs := make([]error, len(perrs))
	for i, e := range perrs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// collectEvents returns the events declared in pkg, ordered by wire name
// and version. Positions in errors are relative to baseDir.
func collectEvents(pkg *packages.Package, baseDir string) ([]*event, error) {
	c := &collector{pkg: pkg, baseDir: baseDir, checked: make(map[*types.Named]bool)}
	var evs []*event
	var upcasts []upcastDecl
	for _, file := range pkg.Syntax {
		consumed := make(map[*ast.Comment]bool)
		for _, decl := range file.Decls {
			if fd, ok := decl.(*ast.FuncDecl); ok {
				if u, ok := c.upcastDirective(fd, consumed); ok {
					upcasts = append(upcasts, u)
				}
				continue
			}
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				doc := ts.Doc
				if doc == nil && !gd.Lparen.IsValid() {
					doc = gd.Doc
				}
				if ev := c.typeSpec(ts, doc, consumed); ev != nil {
					evs = append(evs, ev)
				}
			}
		}
		for _, cg := range file.Comments {
			for _, cm := range cg.List {
				if consumed[cm] || !strings.HasPrefix(cm.Text, directivePrefix) {
					continue
				}
				switch {
				case isEventDirective(cm.Text):
					c.errorf(cm.Slash, "misplaced %s directive: it belongs in the doc comment of a struct type declaration", eventDirective)
				case isDirective(cm.Text, upcastDirective):
					c.errorf(cm.Slash, "misplaced %s directive: it belongs in the doc comment of a function declaration", upcastDirective)
				default:
					c.errorf(cm.Slash, "unknown directive %s", strings.Fields(cm.Text)[0])
				}
			}
		}
	}
	slices.SortFunc(evs, func(a, b *event) int {
		return cmp.Or(strings.Compare(a.WireName, b.WireName), cmp.Compare(a.Version, b.Version))
	})
	for i := 1; i < len(evs); i++ {
		a, b := evs[i-1], evs[i]
		if a.WireName == b.WireName && a.Version == b.Version {
			first, second := a, b
			if posLess(b.pos, a.pos) {
				first, second = b, a
			}
			c.errorAt(second.pos, "event %s version %d is declared twice: by %s (%s) and by %s",
				a.WireName, a.Version, first.GoName, shortPos(first.pos), second.GoName)
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	c.linkUpcasters(evs, upcasts)
	c.checkChains(evs)
	if err := c.err(); err != nil {
		return nil, err
	}
	return evs, nil
}

func posLess(a, b token.Position) bool {
	return cmp.Or(strings.Compare(a.Filename, b.Filename), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column)) < 0
}

func shortPos(p token.Position) string {
	return fmt.Sprintf("%s:%d:%d", p.Filename, p.Line, p.Column)
}

func isEventDirective(text string) bool { return isDirective(text, eventDirective) }

// isDirective reports whether a comment is the given directive, alone or
// followed by arguments.
func isDirective(text, directive string) bool {
	rest, ok := strings.CutPrefix(text, directive)
	return ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t')
}

// typeSpec returns the event declared by a type spec, or nil when the spec
// has no directive or the declaration is invalid (the problems are
// recorded).
func (c *collector) typeSpec(ts *ast.TypeSpec, doc *ast.CommentGroup, consumed map[*ast.Comment]bool) *event {
	if doc == nil {
		return nil
	}
	var directive *ast.Comment
	for _, cm := range doc.List {
		if !isEventDirective(cm.Text) {
			continue
		}
		consumed[cm] = true
		if directive != nil {
			c.errorf(cm.Slash, "second %s directive on %s (the first is at %s)", eventDirective, ts.Name.Name, shortPos(c.position(directive.Slash)))
			continue
		}
		directive = cm
	}
	if directive == nil {
		return nil
	}
	at := directive.Slash
	name := ts.Name.Name
	obj, _ := c.pkg.TypesInfo.Defs[ts.Name].(*types.TypeName)
	switch {
	case obj == nil:
		c.errorf(at, "%s: type not found in the type-checked package", name)
		return nil
	case ts.Assign.IsValid():
		c.errorf(at, "%s is a type alias; declare the event as a struct type", name)
		return nil
	case ts.TypeParams != nil:
		c.errorf(at, "%s is generic; event types cannot have type parameters", name)
		return nil
	case !obj.Exported():
		c.errorf(at, "event type %s is unexported; the generated package cannot name it", name)
		return nil
	}
	named, _ := obj.Type().(*types.Named)
	st, ok := obj.Type().Underlying().(*types.Struct)
	if named == nil || !ok {
		c.errorf(at, "%s is not a struct type; %s applies to struct types", name, eventDirective)
		return nil
	}

	ev := &event{GoName: name, Version: 1, pos: c.position(at), Doc: firstSentence(doc.Text()), named: named}
	ok = c.parseDirective(ev, directive, st)
	for i := range st.NumFields() {
		ev.Fields = append(ev.Fields, st.Field(i))
	}
	if !c.checkFields(ev, named, st, at) {
		ok = false
	}
	if !ok {
		return nil
	}
	return ev
}

// parseDirective reads the directive's keys into ev, reporting whether they
// are all valid.
func (c *collector) parseDirective(ev *event, directive *ast.Comment, st *types.Struct) bool {
	at := directive.Slash
	before := len(c.errs)
	rest := strings.TrimPrefix(directive.Text, eventDirective)
	seen := make(map[string]bool)
	for _, arg := range strings.Fields(rest) {
		key, value, found := strings.Cut(arg, "=")
		if !found && slices.Contains(boolKeys, key) {
			value, found = "true", true
		}
		switch {
		case !found:
			c.errorf(at, "%s: malformed argument %q, want key=value", ev.GoName, arg)
			continue
		case !slices.Contains(directiveKeys, key):
			c.errorf(at, "%s: unknown key %q (known keys: %s)", ev.GoName, key, strings.Join(directiveKeys, ", "))
			continue
		case seen[key]:
			c.errorf(at, "%s: key %s given twice", ev.GoName, key)
			continue
		case value == "":
			c.errorf(at, "%s: empty value for key %s", ev.GoName, key)
			seen[key] = true
			continue
		}
		seen[key] = true
		switch key {
		case "name":
			if !wireNameRE.MatchString(value) {
				c.errorf(at, "%s: invalid name %q: want lowercase dot-separated words of [a-z0-9_], at least two, such as edupulse.pulse.created", ev.GoName, value)
			}
			ev.WireName = value
		case "version":
			v, err := strconv.Atoi(value)
			if err != nil || v < 1 {
				c.errorf(at, "%s: invalid version %q: want an integer >= 1", ev.GoName, value)
			}
			ev.Version = v
		case "aggregate":
			ev.AggregateField = value
		case "aggregate_type":
			if !aggregateTypeRE.MatchString(value) {
				c.errorf(at, "%s: invalid aggregate_type %q: want a lowercase word of [a-z0-9_]", ev.GoName, value)
			}
			ev.AggregateType = value
		case "retired", "unreleased":
			b, err := strconv.ParseBool(value)
			if err != nil {
				c.errorf(at, "%s: invalid %s=%s: want true or false, or the bare key for true", ev.GoName, key, value)
			}
			if key == "retired" {
				ev.Retired = b
			} else {
				ev.Unreleased = b
			}
		}
	}
	if !seen["name"] {
		c.errorf(at, "%s: missing required key name", ev.GoName)
	}
	if !seen["aggregate"] {
		c.errorf(at, "%s: missing required key aggregate (the field holding the aggregate id)", ev.GoName)
	} else if ev.AggregateField != "" {
		c.checkAggregate(ev, st, at)
	}
	if ev.AggregateType == "" && wireNameRE.MatchString(ev.WireName) {
		segs := strings.Split(ev.WireName, ".")
		ev.AggregateType = segs[len(segs)-2]
	}
	return len(c.errs) == before
}

func (c *collector) checkAggregate(ev *event, st *types.Struct, at token.Pos) {
	var field *types.Var
	for i := range st.NumFields() {
		if f := st.Field(i); f.Name() == ev.AggregateField {
			field = f
			break
		}
	}
	if field == nil {
		hint := ""
		for i := range st.NumFields() {
			if f := st.Field(i); strings.EqualFold(f.Name(), ev.AggregateField) {
				hint = fmt.Sprintf(" (did you mean %s? aggregate names the Go field)", f.Name())
			}
		}
		c.errorf(at, "%s: aggregate=%s: %s has no field %s%s", ev.GoName, ev.AggregateField, ev.GoName, ev.AggregateField, hint)
		return
	}
	t := types.Unalias(field.Type())
	if isUUID(t) {
		ev.aggregateKind = aggregateUUID
		return
	}
	if b, ok := t.Underlying().(*types.Basic); ok {
		info := b.Info()
		switch {
		case info&types.IsString != 0:
			ev.aggregateKind = aggregateString
			if !types.Identical(t, types.Typ[types.String]) {
				ev.aggregateConv = "string"
			}
			return
		case info&types.IsInteger != 0 && info&types.IsUnsigned != 0:
			ev.aggregateKind = aggregateUnsigned
			if !types.Identical(t, types.Typ[types.Uint64]) {
				ev.aggregateConv = "uint64"
			}
			return
		case info&types.IsInteger != 0:
			ev.aggregateKind = aggregateSigned
			if !types.Identical(t, types.Typ[types.Int64]) {
				ev.aggregateConv = "int64"
			}
			return
		}
	}
	c.errorf(at, "%s: aggregate field %s has type %s, want uuid.UUID, a string or an integer type",
		ev.GoName, field.Name(), types.TypeString(field.Type(), c.qualifier))
}

// qualifier names other packages by their name in messages, and the events
// package not at all.
func (c *collector) qualifier(p *types.Package) string {
	if p == c.pkg.Types {
		return ""
	}
	return p.Name()
}

func isUUID(t types.Type) bool {
	n, ok := types.Unalias(t).(*types.Named)
	if !ok {
		return false
	}
	obj := n.Obj()
	return obj.Pkg() != nil && obj.Pkg().Path() == "github.com/google/uuid" && obj.Name() == "UUID"
}

// checkFields checks the event struct's fields and the names the wrapper
// would shadow, reporting whether all is well.
func (c *collector) checkFields(ev *event, named *types.Named, st *types.Struct, at token.Pos) bool {
	before := len(c.errs)
	for _, name := range append(slices.Clone(wrapperNames), ev.GoName) {
		obj, _, _ := types.LookupFieldOrMethod(named, true, c.pkg.Types, name)
		if obj == nil {
			continue
		}
		p := at
		if obj.Pkg() == c.pkg.Types && obj.Pos().IsValid() {
			p = obj.Pos()
		}
		switch obj.(type) {
		case *types.Var:
			if name == ev.GoName {
				c.errorf(p, "field %s.%s has the name of the event type, which the generated wrapper embeds", ev.GoName, name)
			} else {
				c.errorf(p, "field %s.%s conflicts with the generated wrapper's %s method", ev.GoName, name, name)
			}
		case *types.Func:
			if name == "MarshalJSON" {
				continue // a custom encoding; the wrapper's MarshalJSON calls it
			}
			c.errorf(p, "method %s.%s conflicts with the generated wrapper's %s", ev.GoName, name, name)
		}
	}
	qual := c.qualifier
	for i := range st.NumFields() {
		f := st.Field(i)
		what := fmt.Sprintf("field %s.%s", ev.GoName, f.Name())
		if !f.Exported() {
			c.errorf(f.Pos(), "%s is unexported: encoding/json would skip it and the generated constructor could not set it", what)
			continue
		}
		s := site{at: f.Pos(), what: what, typ: types.TypeString(f.Type(), qual)}
		c.checkType(f.Type(), s, nil)
	}
	return len(c.errs) == before
}

// site is where a type being checked is used, for messages.
type site struct {
	at   token.Pos
	what string // such as "field PulseCreated.Tags"
	typ  string // the field's declared type
}

func (c *collector) refuse(s site, reason string) {
	c.errorf(s.at, "%s has type %s: %s", s.what, s.typ, reason)
}

// checkType refuses types that encoding/json cannot encode and decode
// faithfully, recursively. stack holds the named types being checked, to
// stop on recursive types.
func (c *collector) checkType(t types.Type, s site, stack []*types.Named) {
	t = types.Unalias(t)
	qual := c.qualifier
	if n, ok := t.(*types.Named); ok {
		obj := n.Obj()
		if obj.Pkg() != nil && !obj.Exported() {
			c.refuse(s, fmt.Sprintf("type %s is unexported, so the generated package cannot name it", types.TypeString(n, qual)))
			return
		}
		if encodesItself(n) || slices.Contains(stack, n) {
			return
		}
		stack = append(stack, n)
		if st, ok := n.Underlying().(*types.Struct); ok {
			if obj.Pkg() == c.pkg.Types {
				// Report problems at the fields of the package's own
				// struct types, once per type.
				if c.checked[n] {
					return
				}
				c.checked[n] = true
				for i := range st.NumFields() {
					f := st.Field(i)
					fs := site{at: f.Pos(), what: fmt.Sprintf("field %s.%s", obj.Name(), f.Name()), typ: types.TypeString(f.Type(), qual)}
					c.checkStructField(f, fs, stack)
				}
				return
			}
			// Another package's struct: report at the field using it.
			var unexported []string
			for i := range st.NumFields() {
				f := st.Field(i)
				if !f.Exported() {
					unexported = append(unexported, f.Name())
					continue
				}
				fs := site{at: s.at, what: fmt.Sprintf("field %s.%s (used by %s)", types.TypeString(n, qual), f.Name(), s.what), typ: types.TypeString(f.Type(), qual)}
				c.checkType(f.Type(), fs, stack)
			}
			if len(unexported) > 0 {
				c.refuse(s, fmt.Sprintf("%s has unexported fields (%s) that encoding/json would skip", types.TypeString(n, qual), strings.Join(unexported, ", ")))
			}
			return
		}
	}
	switch u := t.Underlying().(type) {
	case *types.Basic:
		switch {
		case u.Info()&types.IsComplex != 0:
			c.refuse(s, "complex numbers cannot be encoded as JSON")
		case u.Kind() == types.UnsafePointer:
			c.refuse(s, "unsafe.Pointer cannot be encoded as JSON")
		case u.Kind() == types.Invalid:
			c.refuse(s, "invalid type")
		}
	case *types.Pointer:
		c.checkType(u.Elem(), s, stack)
	case *types.Slice:
		c.checkType(u.Elem(), s, stack)
	case *types.Array:
		c.checkType(u.Elem(), s, stack)
	case *types.Map:
		if !validMapKey(u.Key()) {
			c.refuse(s, fmt.Sprintf("map key type %s is not supported: JSON object keys must be strings or integers", types.TypeString(u.Key(), qual)))
		}
		c.checkType(u.Elem(), s, stack)
	case *types.Struct:
		for i := range u.NumFields() {
			f := u.Field(i)
			fs := site{at: s.at, what: s.what + "." + f.Name(), typ: types.TypeString(f.Type(), qual)}
			c.checkStructField(f, fs, stack)
		}
	case *types.Chan:
		c.refuse(s, "channels cannot be encoded as JSON")
	case *types.Signature:
		c.refuse(s, "functions cannot be encoded as JSON")
	case *types.Interface:
		c.refuse(s, "interface types are not supported: the decoder cannot tell which concrete type to build")
	case *types.TypeParam:
		c.refuse(s, "type parameters are not supported")
	default:
		c.refuse(s, fmt.Sprintf("unsupported type %T", u))
	}
}

func (c *collector) checkStructField(f *types.Var, s site, stack []*types.Named) {
	if !f.Exported() {
		c.errorf(s.at, "%s is unexported: encoding/json would skip it", s.what)
		return
	}
	c.checkType(f.Type(), s, stack)
}

// encodesItself reports whether *T has both halves of json.Marshaler and
// json.Unmarshaler, or of encoding.TextMarshaler and TextUnmarshaler (as
// time.Time and uuid.UUID do); such types are leaves for the checker.
func encodesItself(t types.Type) bool {
	ms := types.NewMethodSet(types.NewPointer(t))
	has := func(name string) bool { return ms.Lookup(nil, name) != nil }
	return (has("MarshalJSON") && has("UnmarshalJSON")) || (has("MarshalText") && has("UnmarshalText"))
}

func validMapKey(t types.Type) bool {
	if b, ok := types.Unalias(t).Underlying().(*types.Basic); ok {
		return b.Info()&(types.IsString|types.IsInteger) != 0
	}
	return false
}

// firstSentence returns the first sentence of a doc comment's text: its
// first paragraph up to the first period followed by a space, joined on
// one line.
func firstSentence(text string) string {
	para, _, _ := strings.Cut(strings.TrimSpace(text), "\n\n")
	para = strings.Join(strings.Fields(para), " ")
	for i := 0; i < len(para); i++ {
		if para[i] == '.' && (i+1 == len(para) || para[i+1] == ' ') {
			return para[:i+1]
		}
	}
	return para
}

// wrapperDoc returns the doc comment text of an event's wrapper type.
func wrapperDoc(ev *event, eventsPkg string) string {
	head := fmt.Sprintf("%s is %s.%s with its envelope", ev.GoName, eventsPkg, ev.GoName)
	s := ev.Doc
	if s == "" {
		return head + "."
	}
	if rest, ok := strings.CutPrefix(s, ev.GoName+":"); ok {
		// "PulseCreated: an instructor published a pulse."
		return head + ": " + strings.TrimSpace(rest)
	}
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	if first := []rune(s)[0]; unicode.IsLower(first) {
		return head + ": " + s
	}
	return head + ". " + s
}
