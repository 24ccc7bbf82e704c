package main

import (
	"go/ast"
	"go/token"
	"go/types"
	"strings"
)

// upcaster is a declared conversion of an event from one version to the
// next: a function of the events package marked with //eventbus:upcast.
type upcaster struct {
	Func      string // the function's name in the events package
	From, To  *event
	WithError bool // the function returns (To, error)
	pos       token.Position
}

// upcastDecl is a function carrying the upcast directive, before its
// signature is checked.
type upcastDecl struct {
	decl      *ast.FuncDecl
	directive *ast.Comment
}

// upcastDirective returns the function's upcast directive, marking it
// consumed, and whether it has one.
func (c *collector) upcastDirective(fd *ast.FuncDecl, consumed map[*ast.Comment]bool) (upcastDecl, bool) {
	if fd.Doc == nil {
		return upcastDecl{}, false
	}
	var found *ast.Comment
	for _, cm := range fd.Doc.List {
		if !isDirective(cm.Text, upcastDirective) {
			continue
		}
		consumed[cm] = true
		if found != nil {
			c.errorf(cm.Slash, "second %s directive on %s", upcastDirective, fd.Name.Name)
			continue
		}
		found = cm
		if args := strings.TrimSpace(strings.TrimPrefix(cm.Text, upcastDirective)); args != "" {
			c.errorf(cm.Slash, "%s: %s takes no arguments (the signature says which versions it converts), got %q", fd.Name.Name, upcastDirective, args)
		}
	}
	if found == nil {
		return upcastDecl{}, false
	}
	return upcastDecl{decl: fd, directive: found}, true
}

// upcastForm is the signature an upcaster must have, for messages.
const upcastForm = "func(Old) New or func(Old) (New, error), where Old and New are consecutive versions of one event"

// linkUpcasters checks the upcast functions' signatures and attaches each
// to the event version it converts from.
func (c *collector) linkUpcasters(evs []*event, decls []upcastDecl) {
	byType := make(map[*types.Named]*event, len(evs))
	for _, ev := range evs {
		byType[ev.named] = ev
	}
	eventOf := func(t types.Type) *event {
		if n, ok := types.Unalias(t).(*types.Named); ok {
			return byType[n]
		}
		return nil
	}
	for _, u := range decls {
		fd, at := u.decl, u.directive.Slash
		name := fd.Name.Name
		fn, _ := c.pkg.TypesInfo.Defs[fd.Name].(*types.Func)
		if fn == nil {
			c.errorf(at, "%s: function not found in the type-checked package", name)
			continue
		}
		sig := fn.Type().(*types.Signature)
		switch {
		case sig.Recv() != nil:
			c.errorf(at, "upcaster %s is a method; declare a plain function, %s", name, upcastForm)
			continue
		case sig.TypeParams() != nil:
			c.errorf(at, "upcaster %s is generic; declare it %s", name, upcastForm)
			continue
		case !fn.Exported():
			c.errorf(at, "upcaster %s is unexported; the generated package cannot call it", name)
			continue
		}
		params, results := sig.Params(), sig.Results()
		withError := results.Len() == 2 && types.Identical(results.At(1).Type(), types.Universe.Lookup("error").Type())
		if params.Len() != 1 || sig.Variadic() || (results.Len() != 1 && !withError) {
			c.errorf(at, "upcaster %s has signature %s; want %s", name, types.TypeString(sig, c.qualifier), upcastForm)
			continue
		}
		from, to := eventOf(params.At(0).Type()), eventOf(results.At(0).Type())
		switch {
		case from == nil:
			c.errorf(at, "upcaster %s: its parameter has type %s, which is not an event type (declared with %s)", name, types.TypeString(params.At(0).Type(), c.qualifier), eventDirective)
			continue
		case to == nil:
			c.errorf(at, "upcaster %s: its result has type %s, which is not an event type (declared with %s)", name, types.TypeString(results.At(0).Type(), c.qualifier), eventDirective)
			continue
		case from.WireName != to.WireName:
			c.errorf(at, "upcaster %s converts %s (%s) into %s (%s): an upcaster converts one version of an event into the next version of the same event",
				name, from.GoName, from.WireName, to.GoName, to.WireName)
			continue
		case to.Version != from.Version+1:
			c.errorf(at, "upcaster %s converts %s version %d into version %d; an upcaster converts a version into the next one (declare one per step: %d to %d, %d to %d, ...)",
				name, from.WireName, from.Version, to.Version, from.Version, from.Version+1, from.Version+1, from.Version+2)
			continue
		case from.Upcast != nil:
			c.errorf(at, "upcaster %s converts %s version %d, which %s (%s) already converts", name, from.WireName, from.Version, from.Upcast.Func, shortPos(from.Upcast.pos))
			continue
		}
		from.Upcast = &upcaster{Func: name, From: from, To: to, WithError: withError, pos: c.position(at)}
	}
}

// checkChains checks that the versions of each event form a chain: no
// version missing between the lowest and the latest, and an upcaster from
// each version to the next unless the version is retired.
func (c *collector) checkChains(evs []*event) {
	for i, ev := range evs { // ordered by wire name and version
		var next *event
		if i+1 < len(evs) && evs[i+1].WireName == ev.WireName {
			next = evs[i+1]
		}
		switch {
		case next != nil && next.Version != ev.Version+1:
			c.errorAt(next.pos, "event %s declares version %d (%s) and version %d (%s) but no version %d: versions of an event form a chain without gaps; declare version %d, with an upcaster from each version to the next",
				ev.WireName, ev.Version, ev.GoName, next.Version, next.GoName, ev.Version+1, ev.Version+1)
		case next == nil && ev.Retired:
			c.errorAt(ev.pos, "event %s version %d (%s) is the latest version and cannot be retired; retire a version once a later one replaces it",
				ev.WireName, ev.Version, ev.GoName)
		case next != nil && ev.Retired && ev.Upcast != nil:
			c.errorAt(ev.pos, "event %s version %d (%s) is marked retired but has an upcaster (%s): remove one of them",
				ev.WireName, ev.Version, ev.GoName, ev.Upcast.Func)
		case next != nil && !ev.Retired && ev.Upcast == nil:
			c.errorAt(ev.pos, "event %s version %d (%s) has no upcaster to version %d (%s): declare func Upcast%s(old %s) %s with the %s directive, or, if no event of version %d exists any more (none stored, none in flight), mark version %d retired in its directive",
				ev.WireName, ev.Version, ev.GoName, next.Version, next.GoName, ev.GoName, ev.GoName, next.GoName, upcastDirective, ev.Version, ev.Version)
		}
	}
}

// latestOf returns, for each event, the latest version of its wire name.
func latestOf(evs []*event) map[*event]*event {
	latest := make(map[*event]*event, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		ev := evs[i]
		if i+1 < len(evs) && evs[i+1].WireName == ev.WireName {
			latest[ev] = latest[evs[i+1]]
		} else {
			latest[ev] = ev
		}
	}
	return latest
}

// upcastChain returns the upcasters that convert ev into the latest
// version of its name, in order, or ok false when a retired version
// breaks the chain. The chain of the latest version is empty.
func upcastChain(ev *event, latest *event) (chain []*upcaster, ok bool) {
	for cur := ev; cur != latest; cur = cur.Upcast.To {
		if cur.Upcast == nil {
			return nil, false
		}
		chain = append(chain, cur.Upcast)
	}
	return chain, true
}
