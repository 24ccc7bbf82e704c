package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/schema"
)

// connectTimeoutDefault bounds connecting when the URL sets no
// connect_timeout.
const connectTimeoutDefault = 10 * time.Second

// open connects to the database named by --database-url or $DATABASE_URL.
// Its errors never contain the URL's password.
func (a *app) open(ctx context.Context) (*pgxpool.Pool, error) {
	dsn := a.databaseURL
	if dsn == "" {
		return nil, usagef("no database: pass --database-url or set DATABASE_URL (postgres://user:password@host:5432/dbname)")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("malformed database URL %s: %s", redactDSN(dsn), parseReason(err, dsn))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeoutDefault
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: %s", redactDSN(dsn), scrub(err.Error(), dsn))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server answered: wrong password, no such database...
			return nil, fmt.Errorf("cannot use database %s: %s", redactDSN(dsn), scrub(pgErr.Error(), dsn))
		}
		return nil, fmt.Errorf("database unreachable at %s: %s", redactDSN(dsn), scrub(err.Error(), dsn))
	}
	return pool, nil
}

// openMigrated is open plus a check that the eventbus schema exists.
func (a *app) openMigrated(ctx context.Context) (*pgxpool.Pool, int, error) {
	pool, err := a.open(ctx)
	if err != nil {
		return nil, 0, err
	}
	lanes, err := schema.Lanes(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, 0, a.schemaError(err)
	}
	return pool, lanes, nil
}

// schemaError turns schema.ErrNotMigrated into advice.
func (a *app) schemaError(err error) error {
	if errors.Is(err, schema.ErrNotMigrated) {
		return fmt.Errorf("the eventbus schema is missing from database %s: run `eventbus migrate` first", redactDSN(a.databaseURL))
	}
	return err
}

// parseReason returns why pgx could not parse dsn, without the password.
func parseReason(err error, dsn string) string {
	s := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// "cannot parse `<dsn>`: reason": the DSN is printed already.
		if i := strings.Index(s, "`: "); i >= 0 {
			s = s[i+3:]
		}
	}
	return scrub(s, dsn)
}

var (
	urlUserinfo = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@`)
	kvPassword  = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
)

// secrets returns the password of a URL or keyword/value DSN, as written
// and unescaped, even when the DSN does not parse.
func secrets(dsn string) []string {
	var out []string
	if m := urlUserinfo.FindStringSubmatch(dsn); m != nil {
		if _, pw, ok := strings.Cut(m[1], ":"); ok && pw != "" {
			out = append(out, pw)
			if u, err := url.PathUnescape(pw); err == nil && u != pw {
				out = append(out, u)
			}
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		if pw := m[2]; pw != "" && pw != "''" {
			out = append(out, pw, strings.Trim(pw, "'"))
		}
	}
	return out
}

// scrub replaces dsn's password in s.
func scrub(s, dsn string) string {
	for _, pw := range secrets(dsn) {
		if pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

// redactDSN returns dsn with its password replaced, for messages.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	if m := urlUserinfo.FindStringSubmatchIndex(dsn); m != nil {
		userinfo := dsn[m[2]:m[3]]
		if user, _, ok := strings.Cut(userinfo, ":"); ok {
			return dsn[:m[2]] + user + ":xxxxx" + dsn[m[3]:]
		}
		return dsn
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}
