// Package pgdsn connects the eventbus command and the example to
// PostgreSQL with errors fit for a terminal: a database URL or keyword/value
// DSN printed with its password masked, whatever its form, and a refused
// connection reported once, in one line.
package pgdsn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Mask replaces a password in Redact's output.
const Mask = "xxxxx"

var (
	urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)
	// A password query parameter of a URL (PostgreSQL's ?password=).
	queryPassword = regexp.MustCompile(`(?i)[?&]password=([^&#]*)`)
	// A password of a keyword/value DSN, quoted or not.
	kvPassword = regexp.MustCompile(`(?i)(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)
	// The start of a keyword/value DSN: "host=..." and the like.
	kvStart = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)
)

// span is the byte range of a password in a DSN.
type span struct{ start, end int }

// passwords returns where the passwords of dsn are: the userinfo's of a URL
// of any scheme (parsable or not), a URL's password query parameter, a
// keyword/value DSN's password, or the password of a user:password@...
// DSN (Go's MySQL driver's form).
func passwords(dsn string) []span {
	var out []span
	switch {
	case urlScheme.MatchString(dsn):
		start := len(urlScheme.FindString(dsn))
		rest := dsn[start:]
		// The userinfo ends at the last '@' before the query, or, when the
		// password holds a '?', the last '@' of all.
		at := -1
		if q := strings.IndexAny(rest, "?#"); q >= 0 {
			at = strings.LastIndex(rest[:q], "@")
		}
		if at < 0 {
			at = strings.LastIndex(rest, "@")
		}
		if at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 && colon+1 < at {
				out = append(out, span{start + colon + 1, start + at})
			}
		}
		for _, m := range queryPassword.FindAllStringSubmatchIndex(dsn, -1) {
			if m[3] > m[2] && (len(out) == 0 || m[2] >= out[0].end) {
				out = append(out, span{m[2], m[3]})
			}
		}
	case kvStart.MatchString(dsn):
		for _, m := range kvPassword.FindAllStringSubmatchIndex(dsn, -1) {
			if v := dsn[m[2]:m[3]]; v != "" && v != "''" {
				out = append(out, span{m[2], m[3]})
			}
		}
	default:
		// user:password@protocol(address)/dbname: the userinfo ends at the
		// last '@' before the last '/'.
		head := dsn
		if slash := strings.LastIndex(dsn, "/"); slash >= 0 {
			head = dsn[:slash]
		}
		if at := strings.LastIndex(head, "@"); at >= 0 {
			if colon := strings.Index(head[:at], ":"); colon >= 0 && colon+1 < at {
				out = append(out, span{colon + 1, at})
			}
		}
	}
	return out
}

// Redact returns dsn with its passwords replaced by Mask, and nothing else
// changed: a URL of any scheme, even one net/url does not parse, a
// keyword/value DSN, or a user:password@tcp(host)/db DSN.
func Redact(dsn string) string {
	spans := passwords(dsn)
	slices.SortFunc(spans, func(a, b span) int { return b.start - a.start })
	for _, s := range spans {
		dsn = dsn[:s.start] + Mask + dsn[s.end:]
	}
	return dsn
}

// secrets returns dsn's passwords as written and as their unescaped forms,
// as a library's message could quote them.
func secrets(dsn string) []string {
	var out []string
	for _, s := range passwords(dsn) {
		pw := dsn[s.start:s.end]
		out = append(out, pw)
		if u, err := url.PathUnescape(pw); err == nil && u != pw {
			out = append(out, u)
		}
		if u, err := url.QueryUnescape(pw); err == nil && u != pw {
			out = append(out, u)
		}
		if t := strings.Trim(pw, "'"); t != pw && t != "" {
			out = append(out, t, strings.ReplaceAll(strings.ReplaceAll(t, `\'`, `'`), `\\`, `\`))
		}
	}
	// Longest first, so that a password is not left half masked by a
	// shorter form of it.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// Scrub replaces dsn's passwords in s, a message that may quote them.
func Scrub(s, dsn string) string {
	for _, pw := range secrets(dsn) {
		if pw != "" {
			s = strings.ReplaceAll(s, pw, Mask)
		}
	}
	return s
}

// Options tune Connect.
type Options struct {
	// ConnectTimeout bounds each connection attempt when the DSN sets no
	// connect_timeout. Defaults to ConnectTimeoutDefault.
	ConnectTimeout time.Duration
}

// ConnectTimeoutDefault is Options.ConnectTimeout's default.
const ConnectTimeoutDefault = 10 * time.Second

// Connect opens a pool on dsn and checks that the server answers, before
// anything else uses it. Its errors name the DSN redacted, never contain
// its password, and say what went wrong once:
//
//	malformed database URL <dsn>: <reason>
//	database unreachable at <dsn>: <address>: <dial error>
//	cannot use database <dsn>: <the server's error>
//
// A context that ends first is returned as its error.
func Connect(ctx context.Context, dsn string, opts Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("malformed database URL %s: %s", Redact(dsn), parseReason(err, dsn))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		if opts.ConnectTimeout <= 0 {
			opts.ConnectTimeout = ConnectTimeoutDefault
		}
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: %s", Redact(dsn), Scrub(err.Error(), dsn))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server answered: wrong password, no such database...
			return nil, fmt.Errorf("cannot use database %s: %s", Redact(dsn), Scrub(pgErr.Error(), dsn))
		}
		return nil, fmt.Errorf("database unreachable at %s: %s", Redact(dsn), Scrub(ConnectReason(err), dsn))
	}
	return pool, nil
}

// ConnectReason returns why a connection failed, each distinct reason
// once, on one line. pgx tries an address more than once (with and without
// TLS under sslmode=prefer, and each address of a host name) and reports
// every attempt.
func ConnectReason(err error) string {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	inner := errors.Unwrap(ce)
	if inner == nil {
		return err.Error()
	}
	var reasons []string
	add := func(e error) {
		for _, line := range strings.Split(e.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" && !slices.Contains(reasons, line) {
				reasons = append(reasons, line)
			}
		}
	}
	if j, ok := inner.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			add(e)
		}
	} else {
		add(inner)
	}
	return strings.Join(reasons, "; ")
}

// parseReason returns why pgx could not parse dsn, without the DSN (pgx
// quotes it with its own, partial, redaction).
func parseReason(err error, dsn string) string {
	s := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if i := strings.Index(s, "`: "); i >= 0 {
			s = s[i+3:]
		}
	}
	return Scrub(s, dsn)
}
