package main

import (
	"go/token"
	"go/types"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// lowerCamel turns an exported Go name into a parameter name following the
// Go initialism convention: PulseID → pulseID, ID → id, URLPath → urlPath,
// HTTP2Server → http2Server.
func lowerCamel(name string) string {
	runes := []rune(name)
	n := 0
	for n < len(runes) && unicode.IsUpper(runes[n]) {
		n++
	}
	switch {
	case n == 0:
		return name
	case n == len(runes):
		return strings.ToLower(name)
	case n == 1, string(runes[n:]) == "s":
		// Pulse → pulse; IDs → ids.
	case unicode.IsLower(runes[n]):
		// The last upper-case letter starts the next word: URLPath.
		n--
	}
	for i := range n {
		runes[i] = unicode.ToLower(runes[i])
	}
	return string(runes)
}

// snake turns a Go name into lower snake case: PulseCreated →
// pulse_created, HTTPRequestMade → http_request_made.
func snake(name string) string {
	runes := []rune(name)
	var b strings.Builder
	for i, r := range runes {
		if unicode.IsUpper(r) && i > 0 {
			prev := runes[i-1]
			nextLower := i+1 < len(runes) && unicode.IsLower(runes[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// isPredeclared reports whether name is one of Go's predeclared
// identifiers (types, constants, zero value and builtin functions).
func isPredeclared(name string) bool {
	return types.Universe.Lookup(name) != nil
}

// paramNames returns a parameter name for each field: its lowerCamel form,
// with "_" appended (repeatedly) while it is a Go keyword, a predeclared
// identifier, one of the names in reserved, or a name already taken by an
// earlier parameter. The "_" suffix is sqlc's convention.
func paramNames(fields []string, reserved map[string]bool) []string {
	taken := make(map[string]bool, len(fields))
	out := make([]string, len(fields))
	for i, f := range fields {
		p := lowerCamel(f)
		for token.IsKeyword(p) || isPredeclared(p) || reserved[p] || taken[p] {
			p += "_"
		}
		taken[p] = true
		out[i] = p
	}
	return out
}

// importSet assigns file-scope names to imported packages so that they are
// unique and do not collide with the package-level names of the generated
// package.
type importSet struct {
	reserved map[string]bool   // package-level identifiers of the generated package
	byPath   map[string]string // import path → name in the file
	byName   map[string]string // name in the file → import path
	used     map[string]bool   // import paths actually referenced
	pkgNames map[string]string // import path → the package's own name
}

func newImportSet(reserved map[string]bool) *importSet {
	return &importSet{
		reserved: reserved,
		byPath:   make(map[string]string),
		byName:   make(map[string]string),
		used:     make(map[string]bool),
		pkgNames: make(map[string]string),
	}
}

// add reserves a name for the package with the given import path and
// package name, without marking it used, and returns that name.
func (s *importSet) add(importPath, pkgName string) string {
	if name, ok := s.byPath[importPath]; ok {
		return name
	}
	name := pkgName
	if !token.IsIdentifier(name) || name == "_" {
		name = "pkg"
	}
	base := name
	for i := 2; s.byName[name] != "" || s.reserved[name] || isPredeclared(name) || token.IsKeyword(name); i++ {
		name = base + strconv.Itoa(i)
	}
	s.byPath[importPath] = name
	s.byName[name] = importPath
	s.pkgNames[importPath] = pkgName
	return name
}

// use reserves (if needed) and marks the package used, returning its name.
func (s *importSet) use(importPath, pkgName string) string {
	name := s.add(importPath, pkgName)
	s.used[importPath] = true
	return name
}

// qualifier is a types.Qualifier that imports the packages it names.
func (s *importSet) qualifier(p *types.Package) string {
	return s.use(p.Path(), p.Name())
}

// importSpec is one line of an import block.
type importSpec struct {
	Name string // explicit name, or "" when the default name applies
	Path string
}

// groups returns the used imports as the standard library group and the
// others, each sorted by path.
func (s *importSet) groups() (std, other []importSpec) {
	for p := range s.used {
		spec := importSpec{Path: p}
		if name := s.byPath[p]; name != defaultImportName(p) || name != s.pkgNames[p] {
			spec.Name = name
		}
		if isStd(p) {
			std = append(std, spec)
		} else {
			other = append(other, spec)
		}
	}
	sort.Slice(std, func(i, j int) bool { return std[i].Path < std[j].Path })
	sort.Slice(other, func(i, j int) bool { return other[i].Path < other[j].Path })
	return std, other
}

// defaultImportName guesses the name a reader expects for an import path:
// its last element, skipping a major version suffix (/v5).
func defaultImportName(importPath string) string {
	base := path.Base(importPath)
	if len(base) > 1 && base[0] == 'v' && isDigits(base[1:]) {
		if dir := path.Dir(importPath); dir != "." {
			base = path.Base(dir)
		}
	}
	return base
}

func isDigits(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r < '0' || r > '9' {
			return false
		}
		i += size
	}
	return s != ""
}

// isStd reports whether an import path belongs to the standard library:
// its first element has no dot.
func isStd(importPath string) bool {
	first, _, _ := strings.Cut(importPath, "/")
	return !strings.Contains(first, ".")
}
