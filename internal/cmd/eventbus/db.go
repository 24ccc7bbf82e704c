package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/pgdsn"
	"github.com/edupulse/eventbus/schema"
)

// open connects to the database named by --database-url or $DATABASE_URL
// and checks that the server answers. Its errors never contain the URL's
// password, and report a refused connection once.
func (a *app) open(ctx context.Context) (*pgxpool.Pool, error) {
	if a.databaseURL == "" {
		return nil, usagef("no database: pass --database-url or set DATABASE_URL (postgres://user:password@host:5432/dbname)")
	}
	return pgdsn.Connect(ctx, a.databaseURL, pgdsn.Options{})
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

// redactDSN returns dsn with its password masked, for messages.
func redactDSN(dsn string) string { return pgdsn.Redact(dsn) }
