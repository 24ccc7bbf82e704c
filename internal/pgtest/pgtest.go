// Package pgtest gives tests fresh, empty PostgreSQL databases.
//
// By default the databases live on one throwaway cluster per test binary,
// started lazily by the first test that asks for a database (see
// internal/pgserver) and stopped by Main. When the environment variable
// DATABASE_URL is set, the databases are created on that server instead and
// dropped when the test ends (kept, and logged, when it failed).
//
// When neither PostgreSQL binaries nor DATABASE_URL are available, tests
// asking for a database are skipped, or fail when the environment variable CI
// is "true".
//
// Usage:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		pool := pgtest.NewPool(t)
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/pgserver"
)

const (
	// envDatabaseURL names a server to create test databases on.
	envDatabaseURL = "DATABASE_URL"
	// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1.
	maxIdentifierLen = 63
	// startTimeout bounds starting the per-binary cluster.
	startTimeout = 2 * time.Minute
	// opTimeout bounds creating or dropping one database.
	opTimeout = time.Minute
)

// backend is where test databases are created: the per-binary cluster or the
// server named by DATABASE_URL.
type backend struct {
	baseURL string           // URL (or keyword/value DSN) of the admin database
	server  *pgserver.Server // nil when using DATABASE_URL
	drop    bool             // drop databases at test cleanup
	mu      sync.Mutex       // guards conn, and serializes CREATE/DROP DATABASE
	conn    *pgx.Conn        // admin connection, opened lazily
}

// shared is the per-test-binary state: the backend, started at most once.
var shared struct {
	mu      sync.Mutex
	tried   bool
	backend *backend
	err     error
}

// getBackend returns the backend, starting the cluster on first use. It is
// safe for concurrent use; a failed start is not retried.
func getBackend() (*backend, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tried {
		return shared.backend, shared.err
	}
	shared.tried = true
	if dsn := os.Getenv(envDatabaseURL); dsn != "" {
		shared.backend = &backend{baseURL: dsn, drop: true}
		return shared.backend, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		shared.err = fmt.Errorf("start the per-test-binary PostgreSQL cluster: %w", err)
		return nil, shared.err
	}
	shared.backend = &backend{baseURL: srv.URL("postgres"), server: srv}
	return shared.backend, nil
}

// NewDatabase returns the connection URL of a fresh, empty database for this
// test, named after the test plus a random suffix. It skips the test when no
// PostgreSQL is available (fails instead when CI=true) and fails it when the
// cluster or the database cannot be created.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	be, err := getBackend()
	if err != nil {
		if errors.Is(err, pgserver.ErrNoBinaries) {
			msg := "pgtest: no PostgreSQL binaries found (install postgresql, or set DATABASE_URL=postgres://...): %v"
			if os.Getenv("CI") == "true" {
				tb.Fatalf(msg, err)
			}
			tb.Skipf(msg, err)
		}
		tb.Fatalf("pgtest: %v", err)
	}

	name, err := databaseName(tb.Name())
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := be.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	dbURL, err := withDatabase(be.baseURL, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if be.drop {
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("pgtest: keeping database %s of the failed test", name)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			if err := be.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				tb.Errorf("pgtest: drop database %s: %v", name, err)
			}
		})
	}
	return dbURL
}

// NewPool is NewDatabase plus a pool connected to the new database, closed
// when the test ends.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	dbURL := NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: ping new database: %v", err)
	}
	return pool
}

// Main runs the tests, then stops the per-binary cluster if one was started,
// and exits with the tests' exit code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it the server still dies with the test binary (parent-death
// signal), but its temporary data directory is left behind.
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// shutdown closes the admin connection and stops the cluster, if any.
func shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	be := shared.backend
	if be == nil {
		return nil
	}
	var errs []error
	be.mu.Lock()
	if be.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := be.conn.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close admin connection: %w", err))
		}
		cancel()
		be.conn = nil
	}
	be.mu.Unlock()
	if be.server != nil {
		if err := be.server.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop cluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// exec runs sql on the admin connection, (re)connecting when needed.
// Statements are serialized: one admin connection is shared by all tests.
func (be *backend) exec(ctx context.Context, sql string) error {
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.conn == nil || be.conn.IsClosed() {
		conn, err := pgx.Connect(ctx, be.baseURL)
		if err != nil {
			return fmt.Errorf("connect to admin database: %w", err)
		}
		be.conn = conn
	}
	if _, err := be.conn.Exec(ctx, sql); err != nil {
		if be.conn.IsClosed() {
			be.conn = nil
		}
		return fmt.Errorf("exec %q: %w", sql, err)
	}
	return nil
}

// databaseName turns a test name into a database name: "t_", the lowercased
// test name with runs of other characters than [a-z0-9] replaced by "_", "_"
// and 8 random hex digits, at most 63 bytes in all.
func databaseName(testName string) (string, error) {
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("random database name suffix: %w", err)
	}
	tail := "_" + hex.EncodeToString(suffix[:])
	const prefix = "t_"

	var b strings.Builder
	lastUnderscore := true // no leading "_" after the prefix
	for _, r := range strings.ToLower(testName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			lastUnderscore = false
		} else if !lastUnderscore {
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	middle := b.String()
	if limit := maxIdentifierLen - len(prefix) - len(tail); len(middle) > limit {
		middle = middle[:limit]
	}
	middle = strings.TrimRight(middle, "_")
	if middle == "" {
		return "t" + tail, nil
	}
	return prefix + middle + tail, nil
}

// withDatabase returns base (a postgres:// URL or a keyword/value DSN) with its
// database replaced by name.
func withDatabase(base, name string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", fmt.Errorf("parse %s: %w", envDatabaseURL, err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value DSN: a later dbname overrides an earlier one. name
	// needs no quoting (see databaseName).
	return strings.TrimSpace(base) + " dbname=" + name, nil
}

// NewIsolatedPool is NewPool on a PostgreSQL cluster of the test's own,
// started for it and stopped when it ends (about a second). Use it for
// tests that measure latency or throughput: watermill-sql reads only rows
// older than the oldest transaction running anywhere in the cluster, so on
// the shared cluster a long transaction of another test (a bulk insert, a
// transaction held open on purpose) delays delivery in every database.
// With DATABASE_URL set there is no cluster to start: it falls back to
// NewPool and says so in the log.
func NewIsolatedPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	if os.Getenv(envDatabaseURL) != "" {
		tb.Logf("pgtest: DATABASE_URL is set: %s shares its cluster with other tests", tb.Name())
		return NewPool(tb)
	}
	_, pool := newIsolated(tb)
	return pool
}

// NewIsolatedServer is NewIsolatedPool that also returns the cluster, for
// tests that stop and resume it (pgserver.Server.Shutdown and Resume): a
// database outage that no other test feels. With DATABASE_URL set there is
// no cluster of the test's own, and the test is skipped.
func NewIsolatedServer(tb testing.TB) (*pgserver.Server, *pgxpool.Pool) {
	tb.Helper()
	if os.Getenv(envDatabaseURL) != "" {
		tb.Skipf("pgtest: DATABASE_URL is set: %s needs a cluster of its own to stop", tb.Name())
	}
	return newIsolated(tb)
}

func newIsolated(tb testing.TB) (*pgserver.Server, *pgxpool.Pool) {
	tb.Helper()
	if _, err := getBackend(); err != nil {
		NewDatabase(tb) // skips or fails the way every test does
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		tb.Fatalf("pgtest: start an isolated cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			tb.Errorf("pgtest: stop the isolated cluster: %v", err)
		}
	})
	dbURL, err := srv.CreateDatabase(ctx, "isolated")
	if err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close) // runs before the cluster stops
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: ping the isolated database: %v", err)
	}
	return srv, pool
}
