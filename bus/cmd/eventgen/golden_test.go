package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/*/want")

// TestGolden runs the generator on each testdata/<case>/input package, with
// the flags in testdata/<case>/args, and compares the output with
// testdata/<case>/want: the generated files under their -out and -queries
// names, or want/stderr.txt for a case that must fail.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/input")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, input := range cases {
		dir := filepath.Dir(input)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			files, genErr := generateCase(t, dir)
			want := filepath.Join(dir, "want")
			if *update {
				writeGolden(t, want, files, genErr)
			}
			if genErr != nil {
				wantErr, err := os.ReadFile(filepath.Join(want, "stderr.txt"))
				if err != nil {
					t.Fatalf("generate failed, and no want/stderr.txt: %v\n%v", err, genErr)
				}
				if diff := cmp.Diff(string(wantErr), genErr.Error()+"\n"); diff != "" {
					t.Errorf("error mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if _, err := os.Stat(filepath.Join(want, "stderr.txt")); err == nil {
				t.Fatalf("generate succeeded, want the error of want/stderr.txt")
			}
			wantFiles := readTree(t, want)
			for name, src := range files {
				w, ok := wantFiles[name]
				if !ok {
					t.Errorf("unexpected file %s (run go test -update)", name)
					continue
				}
				if diff := cmp.Diff(w, string(src)); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
				}
			}
			for name := range wantFiles {
				if _, ok := files[name]; !ok {
					t.Errorf("missing file %s", name)
				}
			}
		})
	}
}

// generateCase generates the case in dir, positions relative to dir.
func generateCase(t *testing.T, dir string) (map[string][]byte, error) {
	t.Helper()
	args := []string{"-out", "gen"}
	if b, err := os.ReadFile(filepath.Join(dir, "args")); err == nil {
		args = strings.Fields(string(b))
	}
	opts, err := parseFlags(args, os.Stderr)
	if err != nil {
		t.Fatalf("args: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := load(filepath.Join(abs, "input"), ".")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	cfg, err := newConfig(opts, pkg, abs)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return generate(cfg)
}

func writeGolden(t *testing.T, want string, files map[string][]byte, genErr error) {
	t.Helper()
	if err := os.RemoveAll(want); err != nil {
		t.Fatal(err)
	}
	if genErr != nil {
		files = map[string][]byte{"stderr.txt": []byte(genErr.Error() + "\n")}
	}
	for name, src := range files {
		p := filepath.Join(want, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns the files under dir by slash-separated relative path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}

// TestGoldenCompiles builds and vets the golden Go packages that can
// compile on their own (those without sqlc wrappers, whose sqlc package
// does not exist).
func TestGoldenCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go vet")
	}
	t.Parallel()
	var pkgs []string
	matches, _ := filepath.Glob("testdata/*/want/*/events_gen.go")
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, queriesFile)); err == nil {
			continue
		}
		pkgs = append(pkgs, "./"+filepath.ToSlash(dir))
	}
	if len(pkgs) == 0 {
		t.Fatal("no golden packages")
	}
	slices.Sort(pkgs)
	cmd := exec.Command("go", append([]string{"vet"}, pkgs...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go vet %s: %v\n%s", strings.Join(pkgs, " "), err, out.String())
	}
}
