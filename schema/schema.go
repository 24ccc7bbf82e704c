// Package schema holds the eventbus SQL migrations and applies them.
//
// The migrations are embedded SQL files named NNN_name.up.sql, applied in
// order, each in its own transaction, and recorded in the
// eventbus_migrations table; applying them again is a no-op. A
// transaction-scoped advisory lock serialises concurrent Migrate calls, so
// several processes may start at once.
//
// Besides the tables, Migrate makes sure the outbox has the configured
// number of lanes (see Options.Lanes).
package schema

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.up.sql
var migrationFS embed.FS

// LanesDefault is the number of outbox lanes when Options.Lanes is zero.
const LanesDefault = 4

// LanesMax is the largest number of lanes.
const LanesMax = 256

// advisoryLockKey serialises migrations across processes ("eventbus" in ASCII).
const advisoryLockKey = 0x6576656e74627573

// DB is what Migrate needs: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Options configures Migrate.
type Options struct {
	// Lanes is the number of outbox lanes: events are spread over lanes by a
	// hash of their aggregate id, and each lane is relayed by one relay
	// process at a time. Lanes can be added later but never removed, and
	// the lane of an aggregate changes when their number does: change it
	// only while the outbox is drained. Zero keeps the number already
	// configured, or LanesDefault on a new database.
	Lanes int
	// Wakeup chooses how relays learn of new events. WakeupUnchanged (the
	// zero value) keeps what is configured, WakeupNotify on a new database.
	Wakeup Wakeup
}

// Wakeup is how relays learn of newly committed events.
type Wakeup int

const (
	// WakeupUnchanged keeps the configured wake-up.
	WakeupUnchanged Wakeup = iota
	// WakeupNotify: a statement trigger on every lane table sends NOTIFY,
	// and relays wake within a millisecond or so. Notifying transactions
	// serialize briefly at commit, which costs concurrent producers
	// throughput (about 18% with 4 producers in BENCHMARKS.md).
	WakeupNotify
	// WakeupPoll: no trigger; relays find new events by polling
	// (RelayConfig.PollInterval), so latency is up to one poll interval.
	WakeupPoll
)

// Validate reports invalid options.
func (o Options) Validate() error {
	var errs []error
	if o.Lanes < 0 || o.Lanes > LanesMax {
		errs = append(errs, fmt.Errorf("lanes %d out of range 1..%d", o.Lanes, LanesMax))
	}
	if o.Wakeup < WakeupUnchanged || o.Wakeup > WakeupPoll {
		errs = append(errs, fmt.Errorf("unknown wakeup %d", o.Wakeup))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("schema: invalid options: %w", err)
	}
	return nil
}

// Migration is one embedded migration.
type Migration struct {
	// Version is the number the file name starts with.
	Version int
	// Name is the rest of the file name, without the .up.sql suffix.
	Name string
	// SQL is the migration's text.
	SQL string
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("schema: read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".up.sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("schema: migration file %q: want NNN_name.up.sql", e.Name())
		}
		text, err := fs.ReadFile(migrationFS, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("schema: read %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(text)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	return ms, nil
}

// Result tells what Migrate did.
type Result struct {
	// Applied lists the versions applied by this call, in order.
	Applied []int
	// Lanes is the number of lanes after the call.
	Lanes int
	// Notify tells whether lane tables NOTIFY relays after the call.
	Notify bool
}

// Migrate applies the migrations that db does not have yet and makes sure
// the outbox has opts.Lanes lanes. It is safe to call on every start.
func Migrate(ctx context.Context, db DB, opts Options) (Result, error) {
	return migrate(ctx, db, opts, math.MaxInt)
}

// migrate is Migrate that applies the migrations up to version upTo only,
// as an older release of this package would.
func migrate(ctx context.Context, db DB, opts Options, upTo int) (Result, error) {
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	ms, err := Migrations()
	if err != nil {
		return Result{}, err
	}
	if err := checkServerVersion(ctx, db); err != nil {
		return Result{}, err
	}
	var res Result
	for _, m := range ms {
		if m.Version > upTo {
			break
		}
		applied, err := applyOne(ctx, db, m)
		if err != nil {
			return res, err
		}
		if applied {
			res.Applied = append(res.Applied, m.Version)
		}
	}
	res.Lanes, res.Notify, err = ensureLanes(ctx, db, opts.Lanes, opts.Wakeup)
	return res, err
}

// checkServerVersion refuses a server older than MinServerVersion.
func checkServerVersion(ctx context.Context, db DB) error {
	q, ok := db.(Querier)
	if !ok {
		return nil // a DB that cannot query outside a transaction: the migrations will tell
	}
	var num int
	var version string
	if err := q.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')").Scan(&num, &version); err != nil {
		return fmt.Errorf("schema: read the server version: %w", err)
	}
	if num < MinServerVersion {
		return fmt.Errorf("schema: %w, this server is %s", ErrServerTooOld, version)
	}
	return nil
}

func inTx(ctx context.Context, db DB, fn func(tx pgx.Tx) error) (err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(ctx)
		}
	}()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(advisoryLockKey)); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func applyOne(ctx context.Context, db DB, m Migration) (applied bool, err error) {
	err = inTx(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrationsTableSQL); err != nil {
			return fmt.Errorf("create eventbus_migrations: %w", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM eventbus_migrations WHERE version = $1)", m.Version).Scan(&exists); err != nil {
			return fmt.Errorf("read eventbus_migrations: %w", err)
		}
		if exists {
			return nil
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO eventbus_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("record migration: %w", err)
		}
		applied = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("schema: migration %03d_%s: %w", m.Version, m.Name, err)
	}
	return applied, nil
}

func ensureLanes(ctx context.Context, db DB, want int, wakeup Wakeup) (lanes int, notify bool, err error) {
	err = inTx(ctx, db, func(tx pgx.Tx) error {
		current, err := readLanes(ctx, tx)
		if err != nil {
			return err
		}
		notify = true // a new database NOTIFYs
		if current > 0 {
			if notify, err = readNotify(ctx, tx); err != nil {
				return err
			}
		}
		was := notify
		switch wakeup {
		case WakeupNotify:
			notify = true
		case WakeupPoll:
			notify = false
		}
		switch {
		case want == 0 && current > 0:
			want = current
		case want == 0:
			want = LanesDefault
		case want < current:
			return fmt.Errorf("%d lanes configured, %d asked: lanes cannot be removed", current, want)
		}
		if want == current && notify == was {
			// Nothing to change: leave the lane tables alone (their DDL
			// takes locks that would stall producers and relays).
			lanes = current
			return nil
		}
		if current > 0 && want > current {
			if err := checkDrained(ctx, tx, current, want); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, "SELECT eventbus_ensure_lanes($1, $2)", want, notify).Scan(&lanes); err != nil {
			return err
		}
		if want != current {
			// Running relays start the new lanes (delivered on commit).
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, NotifyLanesChanged); err != nil {
				return fmt.Errorf("notify relays: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("schema: ensure lanes: %w", err)
	}
	return lanes, notify, nil
}

// NotifyChannel is the channel lane tables NOTIFY on commit, with the lane
// table's name as payload.
const NotifyChannel = "eventbus_outbox"

// NotifyLanesChanged is the payload Migrate sends on NotifyChannel when it
// added lanes, so that running relays start relaying them.
const NotifyLanesChanged = "eventbus_lanes"

// ErrBacklog is wrapped by Migrate's error when it refuses to add lanes
// because events are not yet relayed.
var ErrBacklog = errors.New("events not yet relayed")

// checkDrained refuses to add lanes while some event is not yet relayed by
// every registered relay group. Adding lanes moves aggregates to other
// lanes, and lanes are relayed independently: an aggregate's event still
// waiting in its old lane could be delivered after a newer one written to
// its new lane. With nothing pending, the change is safe while producers
// and relays run: the lock on eventbus_settings waits for the producers'
// transactions in flight (Publish reads the number of lanes in its
// statement), holds new ones until the change commits, and producers then
// find the number changed and run their transaction again (bus.ErrLanesChanged).
func checkDrained(ctx context.Context, tx pgx.Tx, current, want int) error {
	if _, err := tx.Exec(ctx, "LOCK TABLE eventbus_settings IN ACCESS EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("lock eventbus_settings: %w", err)
	}
	var pending int64
	err := tx.QueryRow(ctx, `SELECT count(*) FROM eventbus_outbox o
		WHERE NOT EXISTS (SELECT 1 FROM eventbus_relay_groups)
		   OR EXISTS (SELECT 1 FROM eventbus_relay_groups g
		              LEFT JOIN eventbus_offsets f ON f.consumer_group = g.consumer_group || '/' || o.lane
		              WHERE f.consumer_group IS NULL
		                 OR (o.transaction_id, o."offset") > (f.last_processed_transaction_id, f.offset_acked))`).Scan(&pending)
	if err != nil {
		return fmt.Errorf("count events not yet relayed: %w", err)
	}
	if pending > 0 {
		return fmt.Errorf("cannot grow from %d to %d lanes: %d %w by every relay group (eventbus status); "+
			"an aggregate's pending events would be overtaken by its events in its new lane. "+
			"Let the relays drain the outbox, or pause the producers until they have, then migrate again",
			current, want, pending, ErrBacklog)
	}
	return nil
}

// Notify reports whether lane tables NOTIFY relays on commit (see
// Options.Wakeup), or returns ErrNotMigrated.
func Notify(ctx context.Context, db Querier) (bool, error) { return readNotify(ctx, db) }

func readNotify(ctx context.Context, db Querier) (bool, error) {
	var notify bool
	err := db.QueryRow(ctx, `SELECT notify FROM eventbus_settings`).Scan(&notify)
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		return false, ErrNotMigrated
	}
	if err != nil {
		return false, fmt.Errorf("schema: read the wake-up setting: %w", err)
	}
	return notify, nil
}

// isUndefinedTable reports a query on a table that does not exist.
func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// ErrNotMigrated is returned by Lanes when the eventbus schema is missing.
var ErrNotMigrated = errors.New("schema: eventbus schema not found: run schema.Migrate (or `eventbus migrate`) first")

// Querier runs one query; *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Lanes returns the number of outbox lanes configured in the database, or
// ErrNotMigrated.
func Lanes(ctx context.Context, db Querier) (int, error) {
	n, err := readLanes(ctx, db)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, ErrNotMigrated
	}
	return n, nil
}

func readLanes(ctx context.Context, db Querier) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT coalesce((SELECT lanes FROM eventbus_settings), 0)`).Scan(&n)
	if err != nil {
		if isUndefinedTable(err) {
			return 0, ErrNotMigrated
		}
		return 0, fmt.Errorf("schema: read lanes: %w", err)
	}
	return n, nil
}

// LaneTopicPrefix starts the watermill-sql topic of every lane.
const LaneTopicPrefix = "eventbus_lane_"

// LaneTopic returns the watermill-sql topic of a lane; its table is
// "watermill_" + LaneTopic(lane).
func LaneTopic(lane int) string { return LaneTopicPrefix + strconv.Itoa(lane) }

// OffsetsTable is the table holding every lane's consumer offsets.
const OffsetsTable = "eventbus_offsets"
