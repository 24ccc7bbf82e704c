package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
)

// adoptionHeading starts README's adoption section; the section ends at the
// next second-level heading.
const adoptionHeading = "## Adopting eventbus in your module"

// readmeStep is one fenced block of the adoption section: shell commands
// to run, or a file to write.
type readmeStep struct {
	lang string // "sh", "go", "yaml" or "" (expected output)
	file string // the file a go or yaml block is, from the paragraph before it
	body string
}

// fileInProse finds the file a code block is, in the paragraph that
// introduces it: the first back-quoted path ending in .go or .yaml.
var fileInProse = regexp.MustCompile("`([\\w./-]+\\.(?:go|yaml))`")

// adoptionSteps returns the fenced blocks of README's adoption section.
func adoptionSteps(t *testing.T, readme string) []readmeStep {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n"+adoptionHeading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", adoptionHeading)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var steps []readmeStep
	var prose []string
	lines := strings.Split(section, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if !strings.HasPrefix(line, "```") {
			if strings.TrimSpace(line) == "" {
				if len(prose) > 0 && prose[len(prose)-1] != "" {
					prose = append(prose, "")
				}
			} else {
				if len(prose) > 0 && prose[len(prose)-1] == "" {
					prose = nil
				}
				prose = append(prose, line)
			}
			continue
		}
		st := readmeStep{lang: strings.TrimPrefix(line, "```")}
		var body []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		st.body = strings.Join(body, "\n") + "\n"
		if st.lang == "go" || st.lang == "yaml" {
			m := fileInProse.FindStringSubmatch(strings.Join(prose, " "))
			if m == nil {
				t.Fatalf("README.md: the paragraph before a %s block names no file: %q", st.lang, strings.Join(prose, " "))
			}
			st.file = m[1]
		}
		steps = append(steps, st)
		prose = nil
	}
	return steps
}

// TestStranger plays a stranger adopting eventbus from README.md alone: in
// an empty module beside the checkout (reached as ../eventbus, as README
// says), with no go.sum, it runs the adoption section's commands verbatim
// and writes its files verbatim: go get -tool of eventgen, go generate
// (eventgen, then sqlc, pinned by version, over the schema eventgen
// exported), the
// application migrating with schema.SQL, publishing two events, relaying
// and consuming them typed. The program's output must be the output README
// shows. Everything comes from the module cache, offline; .ci/run fills
// it first.
func TestStranger(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps := adoptionSteps(t, string(readme))
	dbURL := pgtest.NewDatabase(t)

	base := t.TempDir()
	if err := os.Symlink(root, filepath.Join(base, "eventbus")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "shop")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Offline: the module cache is the only proxy (GOPROXY=off would not
	// do: go run pkg@version asks for the module's latest version to check
	// its deprecation, which the cache's version lists answer).
	// EVENTBUS_STRANGER_GOPROXY, which .ci/run sets for a first run, lets
	// the go command fill the module cache instead: go mod tidy in a fresh
	// module wants modules, such as those of its dependencies' tests, that
	// no build of eventbus itself downloads.
	proxy := os.Getenv("EVENTBUS_STRANGER_GOPROXY")
	if proxy == "" {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			t.Fatalf("go env GOMODCACHE: %v", err)
		}
		proxy = "file://" + filepath.Join(strings.TrimSpace(string(out)), "cache", "download")
	}
	env := append(os.Environ(),
		"GOFLAGS=-buildvcs=false", // the user's default -mod=readonly: README's commands must update go.mod themselves
		"GOPROXY="+proxy,
		"GOSUMDB=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"DATABASE_URL="+dbURL,
	)
	var lastOut string
	var ran []string
	for _, st := range steps {
		switch st.lang {
		case "sh":
			for line := range strings.Lines(st.body) {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if line == "go mod init example.com/shop" {
					if _, err := os.Stat(filepath.Join(dir, "go.sum")); !os.IsNotExist(err) {
						t.Fatalf("the module has a go.sum before it is created: %v", err)
					}
				}
				cmd := exec.Command("sh", "-c", line)
				cmd.Dir, cmd.Env = dir, env
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("README step %q: %v\nstdout:\n%s\nstderr:\n%s\nafter: %q", line, err, stdout.String(), stderr.String(), ran)
				}
				t.Logf("ran %q", line)
				ran = append(ran, line)
				lastOut = stdout.String()
			}
		case "go", "yaml":
			writeTestFile(t, filepath.Join(dir, filepath.FromSlash(st.file)), st.body)
			ran = append(ran, "write "+st.file)
		case "":
			got := strings.Split(strings.TrimSpace(lastOut), "\n")
			want := strings.Split(strings.TrimSpace(st.body), "\n")
			// Two topics: the order between them is the broker's.
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("the program printed\n%s\nREADME.md shows\n%s", lastOut, st.body)
			}
		default:
			t.Fatalf("README.md's adoption section has a %q block, which this test cannot run", st.lang)
		}
	}
	if !slices.Contains(ran, "go run .") {
		t.Fatalf("README's adoption steps never run the program: %q", ran)
	}

	// What the steps left: the tool directives, sqlc's output from the
	// exported schema, and no broker client, test server or generator
	// dependency compiled into the application.
	goMod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tool github.com/edupulse/eventbus/bus/cmd/eventgen"} {
		if !strings.Contains(string(goMod), want) {
			t.Errorf("go.mod lacks %q:\n%s", want, goMod)
		}
	}
	for _, f := range []string{"eventsgen/schema/001_outbox.up.sql", "eventsgen/outboxq/db.go", "eventsgen/outboxq/order_placed.sql.go", "eventsgen/queries_gen.go"} {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f))); err != nil {
			t.Errorf("after go generate: %v", err)
		}
	}
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Dir, cmd.Env = dir, env
	deps, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, deps)
	}
	for _, heavy := range []string{"nats", "amqp", "sarama", "franz-go", "go-redis", "gonum", "golang.org/x/tools", "sqlc-dev"} {
		if strings.Contains(string(deps), heavy) {
			t.Errorf("the application compiles %s", heavy)
		}
	}
}
