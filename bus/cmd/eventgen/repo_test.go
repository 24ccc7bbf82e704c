package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// generateDirective is how events/doc.go runs the generator.
const generateDirective = "//go:generate go run github.com/edupulse/eventbus/bus/cmd/eventgen "

// TestRepoGenUpToDate checks that the committed gen package (and its query
// files) is what the generator makes of ./events today, with the flags of
// the go:generate line in events/doc.go, and that no stale generated file
// lies around.
func TestRepoGenUpToDate(t *testing.T) {
	eventsDir, err := filepath.Abs("../../../events")
	if err != nil {
		t.Fatal(err)
	}
	args := generateArgs(t, filepath.Join(eventsDir, "doc.go"))
	opts, err := parseFlags(args, os.Stderr)
	if err != nil {
		t.Fatalf("go:generate flags %q: %v", args, err)
	}
	pkg, err := load(eventsDir, opts.Pattern)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := newConfig(opts, pkg, eventsDir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := generate(cfg)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	for name, src := range files {
		p := filepath.Join(eventsDir, filepath.FromSlash(name))
		disk, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v (run go generate ./...)", name, err)
			continue
		}
		if diff := cmp.Diff(string(src), string(disk)); diff != "" {
			t.Errorf("%s is out of date; run go generate ./... (-generated +on disk):\n%s", name, diff)
		}
	}
	for _, dir := range []string{opts.Out, opts.Queries, opts.Schemas} {
		if dir == "" {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(eventsDir, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := filepath.ToSlash(filepath.Join(dir, e.Name()))
			if _, ok := files[name]; ok || e.IsDir() {
				continue
			}
			if stale, err := isGenerated(filepath.Join(eventsDir, dir, e.Name())); err != nil || stale {
				t.Errorf("%s: stale generated file (run go generate ./...) %v", name, err)
			}
		}
	}
}

// generateArgs returns the generator's arguments from the go:generate line
// of a file.
func generateArgs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), generateDirective); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("%s has no %q line", file, generateDirective)
	return nil
}
