package main

import (
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-cmp/cmp"
)

func TestLowerCamel(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"PulseID":     "pulseID",
		"ID":          "id",
		"IDs":         "ids",
		"URLPath":     "urlPath",
		"HTTP2Server": "http2Server",
		"X":           "x",
		"Title":       "title",
		"already":     "already",
		"ÉtéDate":     "étéDate",
	} {
		if got := lowerCamel(in); got != want {
			t.Errorf("lowerCamel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSnake(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"PulseCreated":    "pulse_created",
		"HTTPRequestMade": "http_request_made",
		"OrderPlacedV2":   "order_placed_v2",
		"A":               "a",
		"UserID":          "user_id",
		"Step2Done":       "step2_done",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParamNames(t *testing.T) {
	t.Parallel()
	got := paramNames(
		[]string{"Type", "E", "Events", "String", "ID", "Id", "Func", "Len", "Title"},
		map[string]bool{"e": true, "events": true},
	)
	want := []string{"type_", "e_", "events_", "string_", "id", "id_", "func_", "len_", "title"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paramNames (-want +got):\n%s", diff)
	}
}

func TestFirstSentence(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"PulseCreated: an instructor published a new learning pulse.\n": "PulseCreated: an instructor published a new learning pulse.",
		"X is emitted\nwhen Y. More text.\n\nSecond paragraph.":         "X is emitted when Y.",
		"Version 1.2 of the thing":                                      "Version 1.2 of the thing",
		"":                                                              "",
	} {
		if got := firstSentence(in); got != want {
			t.Errorf("firstSentence(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestComment(t *testing.T) {
	t.Parallel()
	got := comment("BadgeAwarded is events.BadgeAwarded with its envelope: a badge was awarded to a user.")
	want := "// BadgeAwarded is events.BadgeAwarded with its envelope: a badge was\n// awarded to a user."
	if got != want {
		t.Errorf("comment =\n%s\nwant\n%s", got, want)
	}
	for line := range strings.Lines(comment(strings.Repeat("word ", 100))) {
		if len(strings.TrimRight(line, "\n")) > commentWidth {
			t.Errorf("line longer than %d: %q", commentWidth, line)
		}
	}
}

func TestRenderShowsBadSource(t *testing.T) {
	t.Parallel()
	tmpl := template.Must(template.New("bad.go.tmpl").Parse("package x\n\nfunc {{.}}( {\n"))
	_, err := render(tmpl, "bad.go.tmpl", "broken")
	if err == nil {
		t.Fatal("render of invalid Go succeeded")
	}
	for _, want := range []string{"format generated code", "    3\tfunc broken( {"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestRunWritesNothingOnError runs the command on a failing case: it must
// report the problems and leave the output directories untouched.
func TestRunWritesNothingOnError(t *testing.T) {
	out := t.TempDir()
	t.Chdir("testdata/bad_types/input")
	err := run([]string{"-out", filepath.Join(out, "gen"), "-queries", filepath.Join(out, "queries")}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "events.go:13:2: field Bad.Ch has type chan int") {
		t.Fatalf("run = %v, want the bad_types errors", err)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 0 {
		t.Errorf("run wrote %v despite the errors", entries)
	}
}

// TestRunWrites runs the command twice into directories holding stale
// generated files and hand-written ones.
func TestRunWrites(t *testing.T) {
	out := t.TempDir()
	genDir, queries := filepath.Join(out, "gen"), filepath.Join(out, "queries")
	files := map[string]string{
		"schemas/removed.v1.schema.json": "{\n  \"$comment\": \"" + jsonNotice + "\",\n  \"type\": \"object\"\n}\n",
		"schemas/hand.json":              "{\n  \"$comment\": \"written by hand\"\n}\n",
		"gen/old_gen.go":                 goNotice + "\n\npackage gen\n",
		"gen/hand.go":                    "package gen\n\n// " + goNotice + "\n",
		"queries/removed.sql":            "-- name: X :one\nSELECT 1;\n\n" + sqlNotice + "\n",
		"queries/hand.sql":               "-- name: Y :one\nSELECT 1;\n",
		"queries/order_placed.sql":       "stale contents\n" + sqlNotice + "\n",
	}
	for name, src := range files {
		writeTestFile(t, filepath.Join(out, name), src)
	}
	t.Chdir("testdata/basic/input")
	// The lock goes to the output too (the default, beside the
	// declarations, would write into testdata).
	args := []string{"-out", genDir, "-queries", queries, "-lock", filepath.Join(out, "input", lockFileDefault),
		"-schemas", filepath.Join(out, "schemas"), "-asyncapi", filepath.Join(out, "asyncapi.json")}
	if err := run(args, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	want := []string{
		"asyncapi.json", "gen/events_gen.go", "gen/hand.go", "input/" + lockFileDefault,
		"queries/customer_renamed.sql", "queries/hand.sql", "queries/invoice_issued.sql", "queries/order_placed.sql",
		"queries/order_placed_v2.sql", "queries/stock_moved.sql", "queries/ticket_opened.sql",
		"schemas/hand.json",
		"schemas/shop.billing.invoice_issued.v1.schema.json", "schemas/shop.customer.renamed.v1.schema.json",
		"schemas/shop.order.placed.v1.schema.json", "schemas/shop.order.placed.v2.schema.json",
		"schemas/shop.stock.moved.v1.schema.json", "schemas/support.ticket.opened.v1.schema.json",
	}
	tree := readTree(t, out)
	if diff := cmp.Diff(want, slices.Sorted(maps.Keys(tree))); diff != "" {
		t.Errorf("files after run (-want +got):\n%s", diff)
	}
	golden := readTree(t, filepath.Join("..", "want"))
	for name, src := range golden {
		if tree[name] != src {
			t.Errorf("%s differs from the golden file", name)
		}
	}

	stat := func() os.FileInfo {
		fi, err := os.Stat(filepath.Join(genDir, eventsFile))
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	before := stat()
	if err := run(args, io.Discard); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if after := stat(); !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("second run rewrote the unchanged %s", eventsFile)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"-out", "gen", "extra"},
		{"-nope"},
		{"-out", "gen", "-asyncapi-topics", "bogus"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
	opts, err := parseFlags([]string{"-out", "../gen", "-queries", "q", "-sqlc-package", "x/y", "-package", "p", "-pkg", "./ev"}, io.Discard)
	want := options{Pattern: "./ev", Out: "../gen", Package: "p", Queries: "q", SQLCPackage: "x/y",
		Lock: lockFileDefault, AsyncAPITopics: "name", AsyncAPIVersion: "1.0.0"}
	if err != nil || opts != want {
		t.Errorf("parseFlags = %+v, %v; want %+v", opts, err, want)
	}
}
