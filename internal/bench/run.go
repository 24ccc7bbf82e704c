package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/internal/pgserver"
)

// env is what every section shares: the PostgreSQL server, where databases
// are created, and the progress log.
type env struct {
	cfg      Config
	log      *progress
	logger   *slog.Logger // the relay's logger: warnings and errors only
	server   *pgserver.Server
	adminURL string
	created  []string // databases to drop at the end (DATABASE_URL only)
}

// Run runs the sections of cfg and returns their results. Results are
// returned even when a section failed, with what was measured.
func Run(ctx context.Context, cfg Config, logw io.Writer) (*Results, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &env{
		cfg:    cfg,
		log:    newProgress(logw, cfg.Verbose),
		logger: slog.New(slog.NewTextHandler(logwOrDiscard(logw), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	started := time.Now()
	if err := e.start(ctx); err != nil {
		return nil, err
	}
	defer e.stop()

	res := &Results{Config: cfg}
	res.Meta = e.meta(ctx)
	loadBefore := loadAvg()

	var errs []error
	section := func(name string, fn func() error) {
		if !cfg.runs(name) || ctx.Err() != nil {
			return
		}
		e.log.logf("== %s", name)
		begin := time.Now()
		if err := fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			e.log.logf("%s failed: %v", name, err)
		}
		res.Meta.SectionTimes = append(res.Meta.SectionTimes, sectionTime{name, time.Since(begin)})
	}
	section(sectionProducer, func() (err error) { res.Producer, err = e.runProducer(ctx); return err })
	section(sectionRelay, func() (err error) { res.Relay, res.Processes, err = e.runRelay(ctx); return err })
	section(sectionLatency, func() (err error) { res.Latency, err = e.runLatency(ctx); return err })
	section(sectionMemory, func() (err error) { res.Memory, err = e.runMemory(ctx); return err })
	section(sectionNetwork, func() (err error) { res.Network, res.NetSkipped, err = e.runNetwork(ctx); return err })
	section(sectionStatus, func() (err error) { res.Status, err = e.runStatus(ctx); return err })
	res.Meta.Duration = time.Since(started)
	res.Meta.LoadBefore, res.Meta.LoadAfter = loadBefore, loadAvg()
	res.evaluateTargets()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return res, errors.Join(errs...)
}

func logwOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// start connects to DATABASE_URL or starts an ephemeral cluster.
func (e *env) start(ctx context.Context) error {
	if dsn := os.Getenv("DATABASE_URL"); dsn != "" {
		e.adminURL = dsn
		if u, err := url.Parse(dsn); err == nil && (u.Hostname() == "127.0.0.1" || u.Hostname() == "localhost") {
			pgPort, _ = strconv.Atoi(u.Port())
		}
		e.log.logf("using DATABASE_URL")
		return nil
	}
	begin := time.Now()
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	e.server = srv
	e.adminURL = srv.URL("postgres")
	pgPort = srv.Port()
	e.log.logf("ephemeral PostgreSQL on port %d in %s", srv.Port(), time.Since(begin).Round(time.Millisecond))
	return nil
}

func (e *env) stop() {
	if e.server != nil {
		if err := e.server.Stop(); err != nil {
			e.log.logf("stop PostgreSQL: %v", err)
		}
		return
	}
	if len(e.created) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		e.log.logf("drop bench databases: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, name := range e.created {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			e.log.logf("drop database %s: %v", name, err)
		}
	}
}

// newDatabase creates a fresh database and returns its URL.
func (e *env) newDatabase(ctx context.Context, purpose string) (string, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "bench_" + purpose + "_" + hex.EncodeToString(b[:])
	if e.server != nil {
		return e.server.CreateDatabase(ctx, name)
	}
	conn, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	e.created = append(e.created, name)
	u, err := url.Parse(e.adminURL)
	if err != nil {
		return "", fmt.Errorf("DATABASE_URL must be a postgres:// URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// newPool creates a fresh database and opens a pool of maxConns on it.
func (e *env) newPool(ctx context.Context, purpose string, maxConns int32) (*pgxpool.Pool, string, error) {
	dbURL, err := e.newDatabase(ctx, purpose)
	if err != nil {
		return nil, "", err
	}
	pool, err := openPool(ctx, dbURL, maxConns)
	return pool, dbURL, err
}

func openPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Meta describes the machine and the run.
type Meta struct {
	Started    time.Time
	Duration   time.Duration
	GoVersion  string
	NumCPU     int
	CPUModel   string
	MemTotal   string
	Postgres   string
	PGSettings string
	Kernel     string
	// Git is the module's commit, with the files of the measured packages
	// that differ from it, when git is at hand.
	Git          string
	LoadBefore   string
	LoadAfter    string
	SectionTimes []sectionTime
}

type sectionTime struct {
	Name string
	Took time.Duration
}

func (e *env) meta(ctx context.Context) Meta {
	m := Meta{Started: time.Now(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU()}
	m.Git = gitState()
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	m.MemTotal = procField("/proc/meminfo", "MemTotal")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	conn, err := pgx.Connect(ctx, e.adminURL)
	if err == nil {
		defer conn.Close(ctx)
		_ = conn.QueryRow(ctx, "SELECT version()").Scan(&m.Postgres)
		var settings []string
		for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers"} {
			var v string
			if conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v) == nil {
				settings = append(settings, name+"="+v)
			}
		}
		m.PGSettings = strings.Join(settings, ", ")
	}
	return m
}

// gitState describes the working tree the bench was built from: the
// commit, and the uncommitted files of the packages it measures.
func gitState() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := "commit " + strings.TrimSpace(string(out))
	dirty, err := exec.Command("git", "status", "--porcelain", "--", "bus", "schema", "gen", "events").Output()
	if err == nil && len(strings.TrimSpace(string(dirty))) > 0 {
		var files []string
		// Each line is "XY path": trimming the output's leading space
		// would shift the first line's path.
		for _, line := range strings.Split(strings.TrimRight(string(dirty), "\n"), "\n") {
			if len(line) > 3 {
				files = append(files, line[3:])
			}
		}
		s += " with uncommitted changes to " + strings.Join(files, ", ")
	}
	return s
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
