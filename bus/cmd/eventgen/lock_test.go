package main

import (
	"encoding/json"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"
)

// sourcePackage type-checks one file of an events package held in memory,
// as packages.Load would load it.
func sourcePackage(t *testing.T, src string) *packages.Package {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "/src/events/events.go", src, parser.ParseComments)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	info := &types.Info{
		Types: map[ast.Expr]types.TypeAndValue{},
		Defs:  map[*ast.Ident]types.Object{},
		Uses:  map[*ast.Ident]types.Object{},
	}
	conf := types.Config{Importer: importer.Default()}
	pkg, err := conf.Check("example.com/app/events", fset, []*ast.File{f}, info)
	if err != nil {
		t.Fatalf("type-check: %v\n%s", err, src)
	}
	return &packages.Package{
		Name: pkg.Name(), PkgPath: pkg.Path(), Fset: fset, Syntax: []*ast.File{f},
		Types: pkg, TypesInfo: info, GoFiles: []string{"/src/events/events.go"},
	}
}

// generateSource generates the package of src with a schema lock whose
// previous contents are prev (nil for none).
func generateSource(t *testing.T, src string, prev []byte, accept ...string) (map[string][]byte, error) {
	t.Helper()
	return generate(config{
		Events: sourcePackage(t, src), BaseDir: "/src/events", Out: "gen",
		Lock: lockInput{Path: lockFileDefault, Previous: prev, AcceptBreaking: accept},
	})
}

// lockBase is the released declaration the lock table test changes.
const lockBase = `package events

// A happened.
//
//eventbus:event name=test.a.happened aggregate=ID
type A struct {
	ID    string   ` + "`json:\"id\"`" + `
	Title string   ` + "`json:\"title\"`" + `
	Note  string   ` + "`json:\"note,omitempty\"`" + `
	Count int32    ` + "`json:\"count\"`" + `
	Ratio float64  ` + "`json:\"ratio\"`" + `
	Ptr   *string  ` + "`json:\"ptr\"`" + `
	Inner Inner    ` + "`json:\"inner\"`" + `
	Tags  []string ` + "`json:\"tags\"`" + `
}

// Inner is nested in A.
type Inner struct {
	X int ` + "`json:\"x\"`" + `
}
`

// eventB declares a second event.
const eventB = "\n// B happened.\n//\n//eventbus:event name=test.b.happened aggregate=ID\ntype B struct {\n\tID string `json:\"id\"`\n}\n"

// editBase applies replacements to lockBase, each of which must apply.
func editBase(t *testing.T, pairs ...string) string {
	t.Helper()
	src := lockBase
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(src, pairs[i]) {
			t.Fatalf("edit: %q not in the base", pairs[i])
		}
		src = strings.Replace(src, pairs[i], pairs[i+1], 1)
	}
	return src
}

// TestLockBreakingChanges checks the schema lock's rules (issue 11): each
// breaking change to a released event version fails with an error naming
// the event, the field and the change, and saying what to do; the change
// passes when accepted with -accept-breaking or when the version is marked
// unreleased.
func TestLockBreakingChanges(t *testing.T) {
	t.Parallel()
	files, err := generateSource(t, lockBase, nil)
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	released := files[lockFileDefault]
	const head = "events.go:5:1: test.a.happened version 1 (A): breaking change: "

	for _, tc := range []struct {
		name  string
		pairs []string
		want  []string // the errors' beginnings, in order
	}{
		{"remove a field", []string{"\tTitle string   `json:\"title\"`\n", ""},
			[]string{head + "field title (Go field Title) was removed or renamed"}},
		{"rename a json tag", []string{`json:"title"`, `json:"heading"`},
			[]string{head + "field title (Go field Title) was renamed to heading"}},
		{"rename a field and its tag", []string{"Title string   `json:\"title\"`", "Heading string `json:\"heading\"`"},
			[]string{head + "field title (Go field Title) was removed or renamed", head + "field heading (Go field Heading) was added as required"}},
		{"change a JSON type", []string{"Count int32", "Count string"},
			[]string{head + "field count changed type from integer to string"}},
		{"narrow a number to an integer", []string{"Ratio float64", "Ratio int64  "},
			[]string{head + "field ratio changed type from number to integer"}},
		{"make a signed integer unsigned", []string{"Count int32", "Count uint32"},
			[]string{head + "field count changed type from integer to unsigned integer"}},
		{"change an element type", []string{"Tags  []string", "Tags  []int   "},
			[]string{head + "field tags[] changed type from string to integer"}},
		{"make an optional field required", []string{`json:"note,omitempty"`, `json:"note"`},
			[]string{head + "field note was optional and is now required"}},
		{"make a nullable field non-null", []string{"Ptr   *string", "Ptr   string "},
			[]string{head + "field ptr can no longer be null (was nullable string, now string)"}},
		{"add a required field", []string{"\tTags  []string", "\tExtra int `json:\"extra\"`\n\tTags  []string"},
			[]string{head + "field extra (Go field Extra) was added as required"}},
		{"remove a nested field", []string{"\tX int `json:\"x\"`\n", "\tY int `json:\"y,omitempty\"`\n"},
			[]string{head + "field inner.x (Go field X) was removed or renamed"}},
		{"change the aggregate field", []string{"aggregate=ID", "aggregate=Title"},
			[]string{head + "the aggregate changed from field id to field title"}},
		{"change the aggregate type", []string{"aggregate=ID", "aggregate=ID aggregate_type=thing"},
			[]string{head + "the aggregate type changed from a to thing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := editBase(t, tc.pairs...)
			_, err := generateSource(t, src, released)
			if err == nil {
				t.Fatal("generate succeeded, want a breaking-change error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d:\n%s\nwant it to start with\n%s", i, lines[i], w)
				}
				for _, advice := range []string{
					"payloads already stored would not survive it: keep version 1 as released and declare version 2 with the change, with an //eventbus:upcast function converting version 1 into it",
					"if it was never released, mark it unreleased in its directive (or run eventgen once with -accept-breaking test.a.happened@1)",
				} {
					if !strings.Contains(lines[i], advice) {
						t.Errorf("error %d does not say %q:\n%s", i, advice, lines[i])
					}
				}
			}

			// Accepted deliberately: by the flag, or because the version was
			// never released. The Kind number stays.
			if _, err := generateSource(t, src, released, "test.b.happened@1"); err == nil {
				t.Fatal("accepting another event's breaking changes accepted this one's")
			}
			files, err := generateSource(t, src, released, "test.a.happened@1")
			if err != nil {
				t.Fatalf("with -accept-breaking: %v", err)
			}
			lf := decodeLock(t, files[lockFileDefault])
			if e := lf.Events[0]; e.Name != "test.a.happened" || e.Kind != 1 {
				t.Errorf("accepted lock lists %s with Kind %d, want test.a.happened with its Kind 1", e.Name, e.Kind)
			}
			if _, err := generateSource(t, src, files[lockFileDefault]); err != nil {
				t.Errorf("after acceptance, the same declaration fails: %v", err)
			}
			unreleased := strings.Replace(src, "//eventbus:event name=test.a.happened", "//eventbus:event unreleased name=test.a.happened", 1)
			if _, err := generateSource(t, unreleased, released); err != nil {
				t.Errorf("marked unreleased: %v", err)
			}
		})
	}

	t.Run("remove the event", func(t *testing.T) {
		t.Parallel()
		src := editBase(t, "//eventbus:event name=test.a.happened aggregate=ID", "// no longer an event") + eventB
		_, err := generateSource(t, src, released)
		want := lockFileDefault + ": test.a.happened version 1 (A, Kind 1) is no longer declared: breaking change: events of it already stored would no longer decode; " +
			"declare it again (mark it retired if no upcaster converts it), or, if it was never released, run eventgen once with -accept-breaking test.a.happened@1"
		if err == nil || err.Error() != want {
			t.Fatalf("error:\n%v\nwant\n%s", err, want)
		}
		files, err := generateSource(t, src, released, "test.a.happened@1")
		if err != nil {
			t.Fatalf("with -accept-breaking: %v", err)
		}
		if lf := decodeLock(t, files[lockFileDefault]); len(lf.Events) != 1 || lf.Events[0].Kind != 2 || lf.NextKind != 3 {
			t.Errorf("accepted lock %+v: want B with Kind 2, A's number 1 not reused", lf)
		}
	})
}

// TestLockAcceptBreakingNamesEachVersion checks that -accept-breaking
// accepts the breaking changes of the event versions it lists and no
// others (it used to accept every change of the run), and refuses an entry
// with nothing to accept, such as a typo.
func TestLockAcceptBreakingNamesEachVersion(t *testing.T) {
	t.Parallel()
	base := lockBase + eventB
	files, err := generateSource(t, base, nil)
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	released := files[lockFileDefault]
	// Both events change their json tag.
	both := strings.Replace(strings.Replace(base, `json:"title"`, `json:"heading"`, 1),
		"type B struct {\n\tID string `json:\"id\"`", "type B struct {\n\tID string `json:\"key\"`", 1)
	_, err = generateSource(t, both, released, "test.a.happened@1")
	if err == nil || !strings.Contains(err.Error(), "test.b.happened version 1 (B): breaking change: field id") || strings.Contains(err.Error(), "test.a.happened version 1") {
		t.Fatalf("accepting A only: %v; want B's breaking change refused, A's accepted", err)
	}
	if _, err := generateSource(t, both, released, "test.a.happened@1", "test.b.happened@1"); err != nil {
		t.Fatalf("accepting both: %v", err)
	}
	for _, tc := range []struct{ item, want string }{
		{"test.a.hapened@1", "-accept-breaking names test.a.hapened@1, which has no breaking change to accept"},
		{"test.a.happened", `-accept-breaking: "test.a.happened" is not NAME@VERSION`},
		{"test.a.happened@x", `-accept-breaking: "test.a.happened@x" is not NAME@VERSION`},
	} {
		_, err := generateSource(t, both, released, "test.a.happened@1", "test.b.happened@1", tc.item)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: %v, want an error saying %s", tc.item, err, tc.want)
		}
	}
}

// TestLockCompatibleChanges checks that the changes payloads already
// stored survive pass the lock, keeping every Kind number.
func TestLockCompatibleChanges(t *testing.T) {
	t.Parallel()
	files, err := generateSource(t, lockBase, nil)
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	released := files[lockFileDefault]
	for _, tc := range []struct {
		name  string
		src   func(t *testing.T) string
		kinds map[string]int
	}{
		{"add an optional field", func(t *testing.T) string {
			return editBase(t, "\tTags  []string", "\tExtra *int `json:\"extra,omitempty\"`\n\tTags  []string")
		}, nil},
		{"add an optional nested field", func(t *testing.T) string {
			return editBase(t, "\tX int `json:\"x\"`\n", "\tX int `json:\"x\"`\n\tY int `json:\"y,omitzero\"`\n")
		}, nil},
		{"add an event", func(t *testing.T) string {
			return lockBase + strings.Replace(eventB, "test.b.happened", "test.a.added", 1)
		},
			map[string]int{"test.a.happened": 1, "test.a.added": 2}}, // sorts first, numbered last
		{"add a version with an upcaster", func(t *testing.T) string {
			return lockBase + "\n// A2 happened.\n//\n//eventbus:event name=test.a.happened version=2 aggregate=ID\ntype A2 struct {\n\tID string `json:\"id\"`\n}\n" +
				"\n// UpcastA converts A.\n//\n//eventbus:upcast\nfunc UpcastA(a A) A2 { return A2{ID: a.ID} }\n"
		}, map[string]int{"test.a.happened": 1, "test.a.happened@v2": 2}},
		{"rename the Go field, keeping the tag", func(t *testing.T) string { return editBase(t, "Title string ", "Label string ") }, nil},
		{"rename the Go type", func(t *testing.T) string { return editBase(t, "type A struct", "type Alpha struct") }, nil},
		{"reorder fields", func(t *testing.T) string {
			return editBase(t, "\tTitle string   `json:\"title\"`\n", "",
				"\tTags  []string `json:\"tags\"`\n", "\tTags  []string `json:\"tags\"`\n\tTitle string `json:\"title\"`\n")
		}, nil},
		{"widen an integer to a number", func(t *testing.T) string { return editBase(t, "Count int32", "Count float32") }, nil},
		{"widen an integer type", func(t *testing.T) string { return editBase(t, "Count int32", "Count int64") }, nil},
		{"make a field nullable", func(t *testing.T) string { return editBase(t, "Title string ", "Title *string") }, nil},
		{"make a required field optional", func(t *testing.T) string { return editBase(t, `json:"title"`, `json:"title,omitempty"`) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			files, err := generateSource(t, tc.src(t), released)
			if err != nil {
				t.Fatalf("generate: %v", err)
			}
			want := tc.kinds
			if want == nil {
				want = map[string]int{"test.a.happened": 1}
			}
			lf := decodeLock(t, files[lockFileDefault])
			got := map[string]int{}
			for _, e := range lf.Events {
				k := e.Name
				if e.Version > 1 {
					k += "@v" + strconv.Itoa(e.Version)
				}
				got[k] = e.Kind
			}
			if len(got) != len(want) {
				t.Errorf("lock kinds %v, want %v", got, want)
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("lock kinds %v, want %v", got, want)
				}
			}
			if lf.NextKind != len(want)+1 {
				t.Errorf("next_kind %d, want %d", lf.NextKind, len(want)+1)
			}
		})
	}
}

// TestLockRemovedUnreleased checks that an event version marked unreleased
// may be removed, and that its Kind number is not given to another.
func TestLockRemovedUnreleased(t *testing.T) {
	t.Parallel()
	draft := lockBase + strings.Replace(eventB, "aggregate=ID", "aggregate=ID unreleased", 1)
	files, err := generateSource(t, draft, nil)
	if err != nil {
		t.Fatal(err)
	}
	withC := lockBase + strings.ReplaceAll(strings.Replace(eventB, "test.b", "test.c", 1), "B", "C")
	files, err = generateSource(t, withC, files[lockFileDefault])
	if err != nil {
		t.Fatalf("removing an unreleased event: %v", err)
	}
	lf := decodeLock(t, files[lockFileDefault])
	if len(lf.Events) != 2 || lf.Events[1].Name != "test.c.happened" || lf.Events[1].Kind != 3 || lf.NextKind != 4 {
		t.Fatalf("lock %+v: want A (1) and C (3), B's number 2 not reused", lf)
	}
	src := string(files["gen/"+eventsFile])
	for _, want := range []string{"KindA Kind = 1 ", "KindC Kind = 3 "} {
		if !strings.Contains(src, want) {
			t.Errorf("%s lacks %q", eventsFile, want)
		}
	}
}

// TestLockUnreadable checks that a damaged lock is an error that says what
// to do, not a silent renumbering.
func TestLockUnreadable(t *testing.T) {
	t.Parallel()
	for name, lock := range map[string]string{
		"not JSON":       "{",
		"unknown member": `{"comment": "", "next_kind": 2, "events": [], "extra": 1}`,
		"kind twice":     `{"comment": "", "next_kind": 3, "events": [{"name": "x.y", "version": 1, "kind": 1}, {"name": "x.z", "version": 1, "kind": 1}]}`,
		"kind too big":   `{"comment": "", "next_kind": 2, "events": [{"name": "x.y", "version": 1, "kind": 2}]}`,
	} {
		_, err := generateSource(t, lockBase, []byte(lock))
		if err == nil || !strings.HasPrefix(err.Error(), lockFileDefault+": ") || !strings.Contains(err.Error(), "restore it from version control") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func decodeLock(t *testing.T, data []byte) *lockFile {
	t.Helper()
	var lf lockFile
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatalf("lock: %v\n%s", err, data)
	}
	return &lf
}
