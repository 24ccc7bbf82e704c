package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"go/token"
	"slices"
	"strconv"
	"strings"
)

// lockFileDefault is the schema lock's file name, in the events package's
// directory.
const lockFileDefault = "eventbus.lock.json"

// lockComment heads every lock file.
const lockComment = "Schema lock written by eventgen (go generate): the JSON shape and the Kind number of every event version. " +
	"Commit it and do not edit it. go generate fails on a change that payloads already stored would not survive."

// maxKind is the largest Kind number: Kind is a uint8.
const maxKind = 255

// lockFile is the schema lock: what was generated last, and so what may
// have been released.
type lockFile struct {
	Comment string `json:"comment"`
	// NextKind is the Kind number the next new event version gets; numbers
	// are never reused, even for event versions no longer declared.
	NextKind int          `json:"next_kind"`
	Events   []*lockEvent `json:"events"`
}

// lockEvent is one event version in the lock.
type lockEvent struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Kind    int    `json:"kind"`
	GoType  string `json:"go_type"`
	// Aggregate is the JSON name of the aggregate id's field.
	Aggregate     string `json:"aggregate"`
	AggregateType string `json:"aggregate_type"`
	Unreleased    bool   `json:"unreleased,omitempty"`
	Retired       bool   `json:"retired,omitempty"`
	Payload       shape  `json:"payload"`
}

func (e *lockEvent) key() typeKey { return typeKey{e.Name, e.Version} }

type typeKey struct {
	name    string
	version int
}

// lockInput is what generate needs to know about the lock.
type lockInput struct {
	// Path is the lock file's name in the returned files (slash-separated,
	// relative to the base directory), or "" to keep no lock: Kind
	// numbers then follow the order of the events.
	Path string
	// Previous is the lock file's current contents, or nil when there is
	// none yet.
	Previous []byte
	// AcceptBreaking lists the event versions ("name@version") whose
	// breaking changes are accepted, rewriting the lock: those of events
	// never released. Every entry must name a version with a breaking
	// change, so that a typo or a stale entry is not carried along.
	AcceptBreaking []string
}

// parseAccepted reads lockInput.AcceptBreaking: the event versions, in
// the order given, mapped to the entry that named them.
func parseAccepted(list []string) ([]typeKey, map[typeKey]string, error) {
	var keys []typeKey
	accepted := make(map[typeKey]string, len(list))
	for _, item := range list {
		name, ver, ok := strings.Cut(item, "@")
		v, err := strconv.Atoi(ver)
		if !ok || name == "" || err != nil || v < 1 {
			return nil, nil, fmt.Errorf("-accept-breaking: %q is not NAME@VERSION (such as edupulse.pulse.answered@2)", item)
		}
		k := typeKey{name, v}
		if _, dup := accepted[k]; !dup {
			keys = append(keys, k)
		}
		accepted[k] = item
	}
	return keys, accepted, nil
}

// buildLock returns the new lock of the events, checked against the
// previous one, with the Kind number of each event.
func buildLock(in lockInput, evs []*event, sh *shaper) (*lockFile, map[*event]int, error) {
	var prev *lockFile
	if in.Previous != nil {
		var err error
		if prev, err = parseLock(in.Previous); err != nil {
			return nil, nil, &posError{pos: token.Position{Filename: in.Path},
				msg: fmt.Sprintf("%v; restore it from version control (deleting it renumbers Kind and forgets the released shapes)", err)}
		}
	}
	acceptedKeys, accepted, err := parseAccepted(in.AcceptBreaking)
	if err != nil {
		return nil, nil, err
	}
	used := make(map[typeKey]bool)
	latest := latestOf(evs)
	lf := &lockFile{Comment: lockComment, NextKind: 1}
	prevByKey := make(map[typeKey]*lockEvent)
	if prev != nil {
		lf.NextKind = prev.NextKind
		for _, e := range prev.Events {
			prevByKey[e.key()] = e
		}
	}
	kinds := make(map[*event]int, len(evs))
	declared := make(map[typeKey]bool, len(evs))
	var errs []*posError
	for _, ev := range evs {
		entry := &lockEvent{
			Name: ev.WireName, Version: ev.Version, GoType: ev.GoName,
			AggregateType: ev.AggregateType, Unreleased: ev.Unreleased, Retired: ev.Retired,
			Payload: sh.eventShape(ev),
		}
		entry.Aggregate = aggregateJSONName(entry.Payload, ev.AggregateField)
		k := entry.key()
		declared[k] = true
		if old, ok := prevByKey[k]; ok {
			entry.Kind = old.Kind
			if !old.Unreleased && !ev.Unreleased {
				for _, change := range compareEvents(old, entry) {
					if _, ok := accepted[k]; ok {
						used[k] = true
						continue
					}
					errs = append(errs, &posError{pos: ev.pos, msg: fmt.Sprintf("%s version %d (%s): breaking change: %s; %s",
						ev.WireName, ev.Version, ev.GoName, change, breakingAdvice(ev, latest[ev]))})
				}
			}
		} else {
			entry.Kind = lf.NextKind
			lf.NextKind++
			if entry.Kind > maxKind {
				errs = append(errs, &posError{pos: ev.pos, msg: fmt.Sprintf("%s version %d (%s) would get Kind %d; Kind holds at most %d event versions over the life of a lock",
					ev.WireName, ev.Version, ev.GoName, entry.Kind, maxKind)})
			}
		}
		kinds[ev] = entry.Kind
		lf.Events = append(lf.Events, entry)
	}
	if prev != nil {
		for _, old := range prev.Events {
			if declared[old.key()] || old.Unreleased {
				continue
			}
			if _, ok := accepted[old.key()]; ok {
				used[old.key()] = true
				continue
			}
			errs = append(errs, &posError{pos: token.Position{Filename: in.Path}, msg: fmt.Sprintf(
				"%s version %d (%s, Kind %d) is no longer declared: breaking change: events of it already stored would no longer decode; "+
					"declare it again (mark it retired if no upcaster converts it), or, if it was never released, run eventgen once with -accept-breaking %s@%d",
				old.Name, old.Version, old.GoType, old.Kind, old.Name, old.Version)})
		}
	}
	for _, k := range acceptedKeys {
		if !used[k] {
			errs = append(errs, &posError{pos: token.Position{Filename: in.Path}, msg: fmt.Sprintf(
				"-accept-breaking names %s, which has no breaking change to accept: remove it from the command", accepted[k])})
		}
	}
	if err := joinSorted(errs); err != nil {
		return nil, nil, err
	}
	return lf, kinds, nil
}

// parseLock reads a lock file and checks that its Kind numbers are
// distinct and below NextKind.
func parseLock(data []byte) (*lockFile, error) {
	var lf lockFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lf); err != nil {
		return nil, fmt.Errorf("unreadable schema lock: %w", err)
	}
	seen := make(map[int]string)
	keys := make(map[typeKey]bool)
	for _, e := range lf.Events {
		what := fmt.Sprintf("%s version %d", e.Name, e.Version)
		switch {
		case e.Kind < 1 || e.Kind >= lf.NextKind:
			return nil, fmt.Errorf("invalid schema lock: %s has Kind %d, want 1 to next_kind-1 (%d)", what, e.Kind, lf.NextKind-1)
		case seen[e.Kind] != "":
			return nil, fmt.Errorf("invalid schema lock: %s and %s have the same Kind %d", seen[e.Kind], what, e.Kind)
		case keys[e.key()]:
			return nil, fmt.Errorf("invalid schema lock: %s is listed twice", what)
		}
		seen[e.Kind] = what
		keys[e.key()] = true
	}
	return &lf, nil
}

// encodeLock returns the lock file's contents.
func encodeLock(lf *lockFile) ([]byte, error) {
	slices.SortFunc(lf.Events, func(a, b *lockEvent) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	data, err := json.MarshalIndent(lf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// aggregateJSONName returns the JSON name of the payload member holding
// the aggregate id, or the Go field's name when the payload leaves it out.
func aggregateJSONName(payload shape, goField string) string {
	for _, f := range payload.Fields {
		if f.GoName == goField {
			return f.Name
		}
	}
	return goField
}

// breakingAdvice says what to do instead of a breaking change to ev.
func breakingAdvice(ev, latest *event) string {
	escape := fmt.Sprintf("if it was never released, mark it unreleased in its directive (or run eventgen once with -accept-breaking %s@%d)", ev.WireName, ev.Version)
	if ev == latest {
		return fmt.Sprintf("payloads already stored would not survive it: keep version %d as released and declare version %d with the change, "+
			"with an %s function converting version %d into it; %s",
			ev.Version, ev.Version+1, upcastDirective, ev.Version, escape)
	}
	return fmt.Sprintf("payloads already stored would not survive it: keep version %d as released (its upcaster converts it to version %d); %s",
		ev.Version, ev.Version+1, escape)
}

// compareEvents lists the breaking changes from old to new, one message
// each, naming the field and the change.
func compareEvents(old, new *lockEvent) []string {
	var out []string
	if old.Aggregate != new.Aggregate {
		out = append(out, fmt.Sprintf("the aggregate changed from field %s to field %s (an aggregate's events are ordered and routed by it)", old.Aggregate, new.Aggregate))
	}
	if old.AggregateType != new.AggregateType {
		out = append(out, fmt.Sprintf("the aggregate type changed from %s to %s", old.AggregateType, new.AggregateType))
	}
	compareShapes("", &old.Payload, &new.Payload, &out)
	return out
}

// compareShapes appends the changes from old to new that a payload
// written with old would not survive when read with new. path names the
// member, "" for the payload itself.
func compareShapes(path string, old, new *shape, out *[]string) {
	what := "the payload"
	if path != "" {
		what = "field " + path
	}
	typeChanged := func() {
		*out = append(*out, fmt.Sprintf("%s changed type from %s to %s", what, old.describe(), new.describe()))
	}
	switch {
	case old.Type != new.Type && !(old.Type == "integer" && new.Type == "number"):
		typeChanged()
		return
	case old.Type == "integer" && new.Type == "integer" && !old.Unsigned && new.Unsigned:
		typeChanged()
		return
	case new.Format != "" && new.Format != old.Format:
		typeChanged()
		return
	case old.Type == "any" && old.GoType != new.GoType:
		typeChanged()
		return
	case old.Type == "array" && old.Length != new.Length:
		typeChanged()
		return
	case old.Type == "map" && old.Keys == "string" && new.Keys == "integer":
		typeChanged()
		return
	}
	if old.Nullable && !new.Nullable {
		*out = append(*out, fmt.Sprintf("%s can no longer be null (was %s, now %s)", what, old.describe(), new.describe()))
	}
	switch old.Type {
	case "array":
		compareShapes(path+"[]", old.Items, new.Items, out)
	case "map":
		compareShapes(path+"{}", old.Items, new.Items, out)
	case "object":
		if old.Ref || new.Ref {
			return // a recursive use: compared where it is defined
		}
		prefix := path
		if prefix != "" {
			prefix += "."
		}
		compareFields(prefix, old.Fields, new.Fields, out)
	}
}

func compareFields(prefix string, old, new []*field, out *[]string) {
	byName := make(map[string]*field, len(new))
	byGoName := make(map[string]*field, len(new))
	for _, f := range new {
		byName[f.Name] = f
		byGoName[f.GoName] = f
	}
	inOld := make(map[string]bool, len(old))
	for _, of := range old {
		inOld[of.Name] = true
		nf := byName[of.Name]
		if nf == nil {
			if g := byGoName[of.GoName]; g != nil {
				*out = append(*out, fmt.Sprintf("field %s%s (Go field %s) was renamed to %s%s", prefix, of.Name, of.GoName, prefix, g.Name))
			} else {
				*out = append(*out, fmt.Sprintf("field %s%s (Go field %s) was removed or renamed", prefix, of.Name, of.GoName))
			}
			continue
		}
		if of.Optional && !nf.Optional {
			*out = append(*out, fmt.Sprintf("field %s%s was optional and is now required (payloads already stored may lack it)", prefix, of.Name))
		}
		compareShapes(prefix+of.Name, &of.shape, &nf.shape, out)
	}
	for _, nf := range new {
		if !inOld[nf.Name] && !nf.Optional {
			if _, renamed := byGoNameOf(old, nf.GoName); renamed {
				continue // reported as a rename
			}
			*out = append(*out, fmt.Sprintf("field %s%s (Go field %s) was added as required (payloads already stored lack it; an optional field, tagged omitempty or omitzero, is a compatible addition)",
				prefix, nf.Name, nf.GoName))
		}
	}
}

func byGoNameOf(fields []*field, goName string) (*field, bool) {
	for _, f := range fields {
		if f.GoName == goName {
			return f, true
		}
	}
	return nil, false
}
