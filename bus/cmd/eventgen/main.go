// Command eventgen generates the typed event code of an events package:
// for each struct type marked with an //eventbus:event directive, a wrapper
// type implementing bus.Event with its constructor, the sealed Event sum
// type and its Kind discriminator, an exhaustive Handler with Dispatch, the
// codec Registry with the declared upcasters, the schema lock, and
// optionally sqlc queries over the outbox with typed wrappers, a JSON
// Schema per event version and an AsyncAPI document.
//
// It runs from go generate in the events package's directory:
//
//	//go:generate go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../gen -queries ../gen/queries
//
// # Flags
//
//	-pkg pattern        the events package (default ".", the current directory)
//	-out dir            the directory of the generated package (required)
//	-package name       the generated package's name (default: the base name of -out)
//	-queries dir        write one sqlc query file per event into dir
//	-sqlc-package path  import path of the package sqlc generates from -queries;
//	                    adds typed query wrappers (NewQueries) to the generated package
//	-sqlc-out dir       sqlc's output directory: its files of removed query files are removed
//	-sqlc-schema dir    write eventbus's outbox schema into dir (its migrations,
//	                    NNN_name.up.sql), for sqlc.yaml's schema: sqlc then needs
//	                    nothing from the module cache
//	-lock file          the schema lock, relative to the events package's directory
//	                    (default eventbus.lock.json); empty for none
//	-accept-breaking l  accept the breaking changes of the event versions listed
//	                    (NAME@VERSION, comma-separated), rewriting the lock
//	-schemas dir        write a JSON Schema (draft 2020-12) per event version into dir
//	-asyncapi file      write an AsyncAPI 3.0 document of the events
//	-asyncapi-topics r  the routing of its channels: name (default), aggregate:PREFIX, single:TOPIC
//	-asyncapi-version v its info.version (default 1.0.0)
//
// # Output
//
// The generated package gets events_gen.go and, with -sqlc-package,
// queries_gen.go; -queries gets <snake_case_type>.sql per event, and
// -schemas <name>.v<version>.schema.json per event version. Generated
// files that are no longer produced are removed from these directories;
// only files carrying eventgen's "Code generated" notice are ever removed or
// overwritten. The sqlc queries expect sqlc's pgx/v5 driver with
// emit_methods_with_db_argument: true.
//
// # Versions, upcasters and the schema lock
//
// Functions marked //eventbus:upcast convert one version of an event into
// the next; the generated registry and Dispatch chain them. The schema lock
// records the JSON shape and the Kind number of every event version; a
// change that payloads already stored would not survive is an error. The
// events package's documentation (events/doc.go in this module) describes
// both.
//
// Any problem in the declarations or against the lock (all are reported,
// with file:line:col) makes eventgen exit with status 1 without writing
// anything.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/tools/go/packages"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	Pattern         string
	Out             string
	Package         string
	Queries         string
	SQLCPackage     string
	SQLCOut         string
	SQLCSchema      string
	Lock            string
	AcceptBreaking  string
	Schemas         string
	AsyncAPI        string
	AsyncAPITopics  string
	AsyncAPIVersion string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("eventgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Pattern, "pkg", ".", "the events `package` pattern")
	fs.StringVar(&o.Out, "out", "", "the `directory` of the generated package (required)")
	fs.StringVar(&o.Package, "package", "", "the generated package's `name` (default: the base name of -out)")
	fs.StringVar(&o.Queries, "queries", "", "write sqlc query files into `directory`")
	fs.StringVar(&o.SQLCPackage, "sqlc-package", "", "import `path` of the sqlc package generated from -queries; adds typed query wrappers")
	fs.StringVar(&o.SQLCOut, "sqlc-out", "", "sqlc's output `directory` for -queries: its files of query files no longer generated are removed (sqlc never removes them)")
	fs.StringVar(&o.SQLCSchema, "sqlc-schema", "", "write eventbus's outbox schema (its migrations, NNN_name.up.sql) into `directory`, for sqlc.yaml's schema")
	fs.StringVar(&o.Lock, "lock", lockFileDefault, "the schema lock `file`, relative to the events package's directory; empty for none")
	fs.StringVar(&o.AcceptBreaking, "accept-breaking", "", "accept the breaking changes of the event versions in `list` (NAME@VERSION, comma-separated) and rewrite the lock (for events never released)")
	fs.StringVar(&o.Schemas, "schemas", "", "write a JSON Schema (draft 2020-12) per event version into `directory`")
	fs.StringVar(&o.AsyncAPI, "asyncapi", "", "write an AsyncAPI 3.0 document of the events to `file`")
	fs.StringVar(&o.AsyncAPITopics, "asyncapi-topics", "name", "the `routing` of the AsyncAPI channels: name (a topic per wire name, the outbox default), aggregate:PREFIX or single:TOPIC")
	fs.StringVar(&o.AsyncAPIVersion, "asyncapi-version", "1.0.0", "the AsyncAPI document's info.version")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: eventgen -out dir [-package name] [-queries dir [-sqlc-package path] [-sqlc-out dir] [-sqlc-schema dir]] [-lock file] [-schemas dir] [-asyncapi file] [-pkg pattern]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("eventgen: unexpected arguments %q", fs.Args())
	}
	if o.Out == "" {
		return o, errors.New("eventgen: -out is required")
	}
	if o.SQLCOut != "" && o.Queries == "" {
		return o, errors.New("eventgen: -sqlc-out needs -queries")
	}
	if _, err := topicFunc(o.AsyncAPITopics); err != nil {
		return o, fmt.Errorf("eventgen: %w", err)
	}
	return o, nil
}

// newConfig returns the generator's configuration for the loaded events
// package, with positions and output names relative to baseDir, reading
// the schema lock's current contents.
func newConfig(opts options, pkg *packages.Package, baseDir string) (config, error) {
	cfg := config{
		Events:          pkg,
		BaseDir:         baseDir,
		Out:             filepath.ToSlash(opts.Out),
		Package:         opts.Package,
		Queries:         filepath.ToSlash(opts.Queries),
		SQLCSchema:      filepath.ToSlash(opts.SQLCSchema),
		SQLCPackage:     opts.SQLCPackage,
		Schemas:         filepath.ToSlash(opts.Schemas),
		AsyncAPI:        filepath.ToSlash(opts.AsyncAPI),
		AsyncAPITopics:  opts.AsyncAPITopics,
		AsyncAPIVersion: opts.AsyncAPIVersion,
	}
	if opts.AcceptBreaking != "" {
		for _, item := range strings.Split(opts.AcceptBreaking, ",") {
			cfg.Lock.AcceptBreaking = append(cfg.Lock.AcceptBreaking, strings.TrimSpace(item))
		}
	}
	if opts.Lock == "" {
		return cfg, nil
	}
	if len(pkg.GoFiles) == 0 {
		return cfg, fmt.Errorf("eventgen: package %s has no Go files to put the schema lock beside", pkg.PkgPath)
	}
	lock := opts.Lock
	if !filepath.IsAbs(lock) {
		lock = filepath.Join(filepath.Dir(pkg.GoFiles[0]), lock)
	}
	rel, err := filepath.Rel(baseDir, lock)
	if err != nil {
		return cfg, fmt.Errorf("eventgen: schema lock %s: %w", lock, err)
	}
	cfg.Lock.Path = filepath.ToSlash(rel)
	data, err := os.ReadFile(lock)
	switch {
	case err == nil:
		cfg.Lock.Previous = data
	case !errors.Is(err, os.ErrNotExist):
		return cfg, fmt.Errorf("eventgen: read the schema lock: %w", err)
	}
	return cfg, nil
}

func run(args []string, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	pkg, err := load(wd, opts.Pattern)
	if err != nil {
		return err
	}
	cfg, err := newConfig(opts, pkg, wd)
	if err != nil {
		return err
	}
	files, err := generate(cfg)
	if err != nil {
		return err
	}
	dirs := []string{opts.Out}
	if opts.Queries != "" {
		dirs = append(dirs, opts.Queries)
	}
	if opts.Schemas != "" {
		dirs = append(dirs, opts.Schemas)
	}
	if opts.SQLCSchema != "" {
		dirs = append(dirs, opts.SQLCSchema)
	}
	if err := write(files, dirs); err != nil {
		return err
	}
	if opts.SQLCOut != "" {
		return removeStaleSQLC(opts.SQLCOut, opts.Queries)
	}
	return nil
}

// removeStaleSQLC removes the files sqlc generated in dir from query files
// of queriesDir that eventgen no longer writes: X.sql.go, made by sqlc from
// X.sql, when queriesDir has no X.sql. sqlc itself never removes them.
func removeStaleSQLC(dir, queriesDir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		source, ok := strings.CutSuffix(e.Name(), ".go")
		if e.IsDir() || !ok || !strings.HasSuffix(source, ".sql") {
			continue
		}
		if _, err := os.Stat(filepath.Join(queriesDir, source)); err == nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		head, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(head, []byte("// Code generated by sqlc. DO NOT EDIT.")) ||
			!bytes.Contains(head, []byte("// source: "+source+"\n")) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// loadMode is what the generator needs of the events package.
const loadMode = packages.NeedName | packages.NeedTypes | packages.NeedSyntax | packages.NeedTypesInfo | packages.NeedFiles

// load loads the one package matching pattern, from dir.
func load(dir, pattern string) (*packages.Package, error) {
	pkgs, err := packages.Load(&packages.Config{Mode: loadMode, Dir: dir}, pattern)
	if err != nil {
		return nil, fmt.Errorf("eventgen: load %s: %w", pattern, err)
	}
	if len(pkgs) != 1 {
		return nil, fmt.Errorf("eventgen: pattern %q matches %d packages, want 1", pattern, len(pkgs))
	}
	pkg := pkgs[0]
	if len(pkg.Errors) > 0 {
		var errs []error
		for _, e := range pkg.Errors {
			errs = append(errs, e)
		}
		return nil, fmt.Errorf("eventgen: load %s:\n%w", pattern, errors.Join(errs...))
	}
	return pkg, nil
}

// write writes the files (skipping those whose contents are unchanged) and
// removes the files of dirs that carry an eventgen notice but were not
// generated this time.
func write(files map[string][]byte, dirs []string) error {
	want := make(map[string]bool, len(files))
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
		want[filepath.Clean(filepath.FromSlash(name))] = true
	}
	slices.Sort(names)
	for _, name := range names {
		p := filepath.FromSlash(name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, files[name]) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeFile(p, files[name]); err != nil {
			return err
		}
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if e.IsDir() || want[filepath.Clean(p)] {
				continue
			}
			stale, err := isGenerated(p)
			if err != nil {
				return err
			}
			if stale {
				if err := os.Remove(p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// writeFile replaces a file through a temporary file, so that an
// interrupted run leaves either the old or the new contents.
func writeFile(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".eventgen-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), name)
}

// isGenerated reports whether a file was written by eventgen: a Go file
// whose first line is the Go notice, a .sql file holding the SQL notice on
// a line of its own, or a .json file whose $comment or x-generated member
// is the JSON notice.
func isGenerated(name string) (bool, error) {
	switch filepath.Ext(name) {
	case ".go":
		data, err := os.ReadFile(name)
		if err != nil {
			return false, err
		}
		first, _, _ := strings.Cut(string(data), "\n")
		return strings.TrimRight(first, "\r") == goNotice, nil
	case ".sql":
		data, err := os.ReadFile(name)
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(string(data)) {
			if strings.TrimRight(line, "\r\n") == sqlNotice {
				return true, nil
			}
		}
	case ".json":
		data, err := os.ReadFile(name)
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if line == `"$comment": "`+jsonNotice+`",` || line == `"x-generated": "`+jsonNotice+`",` {
				return true, nil
			}
		}
	}
	return false, nil
}
