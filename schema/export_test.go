package schema

import "context"

// MigrateTo applies the migrations up to version only, as an older release
// of this package would, for tests of upgrades.
func MigrateTo(ctx context.Context, db DB, opts Options, version int) (Result, error) {
	return migrate(ctx, db, opts, version)
}

// CheckServerVersion is checkServerVersion, for tests.
func CheckServerVersion(ctx context.Context, db DB) error { return checkServerVersion(ctx, db) }
