// Package pgserver starts throwaway PostgreSQL clusters from the PostgreSQL
// server binaries installed on the local machine (initdb and postgres).
//
// A cluster lives in a fresh temporary directory, listens on a free loopback
// port with trust authentication for the "postgres" superuser, and runs with
// durability switched off (fsync, synchronous_commit and full_page_writes are
// off), which makes it fast and suitable for tests only.
//
// When the calling process runs as root, initdb and postgres (which refuse to
// run as root) are run as the "postgres" system user, which must exist.
//
// The server process gets a parent-death signal, so it does not outlive the
// process that started it even if Stop is never called; the data directory is
// only removed by Stop, though.
package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/internal/childproc"
)

// ErrNoBinaries is returned (wrapped) by FindBinDir and Start when no
// directory holding both initdb and postgres can be found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found")

const (
	// readyTimeout bounds the wait for a started server to accept connections.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for the server to exit after SIGQUIT before
	// the whole process group is killed.
	stopTimeout = 10 * time.Second
	// startAttempts is how many ports are tried when the chosen one was taken.
	startAttempts = 3
	// logTailSize is how many bytes of the server log are kept for error messages.
	logTailSize = 8 << 10
	// systemUser is the account initdb and postgres run as when we are root.
	systemUser = "postgres"
	// superuser is the database superuser created by initdb.
	superuser = "postgres"
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// BinDir is the directory holding initdb and postgres. When empty it is
	// found with FindBinDir.
	BinDir string
	// Logf, when set, receives progress messages and the server's log lines.
	// It must stay callable until Stop returns.
	Logf func(format string, args ...any)
	// ExtraSettings are passed to postgres as "-c key=value" after the
	// defaults, so they can override them.
	ExtraSettings map[string]string
}

// Server is a running PostgreSQL cluster started by Start. Its methods are
// safe for concurrent use.
type Server struct {
	binDir  string
	baseDir string // temporary directory holding data/, removed by Stop
	dataDir string
	port    int
	logf    func(format string, args ...any)
	log     *logBuffer
	cred    *syscall.Credential // what initdb and postgres run as; nil: ourselves
	extra   map[string]string   // Options.ExtraSettings, for Resume

	mu   sync.Mutex         // guards proc, log and down against Shutdown and Resume
	proc *childproc.Process // the running postmaster, or nil
	down bool               // stopped by Shutdown, to be started by Resume

	stopOnce sync.Once
	stopErr  error
}

// FindBinDir returns the directory holding the PostgreSQL server binaries:
// first the directory of an initdb found on PATH (symbolic links resolved)
// that also holds postgres, then the newest /usr/lib/postgresql/*/bin.
// The error wraps ErrNoBinaries when none is found.
func FindBinDir() (string, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		candidates := []string{filepath.Dir(initdb)}
		if resolved, err := filepath.EvalSymlinks(initdb); err == nil {
			candidates = append([]string{filepath.Dir(resolved)}, candidates...)
		}
		for _, dir := range candidates {
			if hasBinaries(dir) {
				return dir, nil
			}
		}
	}
	dirs, err := filepath.Glob("/usr/lib/postgresql/*/bin")
	if err != nil {
		return "", fmt.Errorf("pgserver: glob PostgreSQL directories: %w", err)
	}
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(versionOf(dirs[j]), versionOf(dirs[i])) // newest first
	})
	for _, dir := range dirs {
		if hasBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("pgserver: searched PATH and /usr/lib/postgresql/*/bin: %w", ErrNoBinaries)
}

// versionOf parses the version from /usr/lib/postgresql/VERSION/bin.
func versionOf(binDir string) []int {
	var v []int
	for _, part := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			n = -1
		}
		v = append(v, n)
	}
	return v
}

func versionLess(a, b []int) bool { return slices.Compare(a, b) < 0 }

func hasBinaries(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Start creates a new cluster in a temporary directory and starts a server on
// a free loopback port, returning once it accepts connections. ctx bounds the
// start only; the server runs until Stop. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return nil, fmt.Errorf("pgserver: start: %w", err)
		}
	} else if !hasBinaries(binDir) {
		return nil, fmt.Errorf("pgserver: start: directory %s: %w", binDir, ErrNoBinaries)
	}

	cred, err := credential()
	if err != nil {
		return nil, err
	}

	baseDir, err := os.MkdirTemp("", "pgserver-")
	if err != nil {
		return nil, fmt.Errorf("pgserver: create temporary directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(baseDir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(baseDir)
			return nil, fmt.Errorf("pgserver: chown %s to user %s: %w", baseDir, systemUser, err)
		}
	}

	s := &Server{
		binDir:  binDir,
		baseDir: baseDir,
		dataDir: filepath.Join(baseDir, "data"),
		logf:    opts.Logf,
		cred:    cred,
		extra:   opts.ExtraSettings,
	}
	if err := s.initdb(ctx, cred); err != nil {
		_ = os.RemoveAll(baseDir)
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err == nil {
			s.port = port // before the server runs: URL and Port read it unguarded
			err = s.start(ctx, port)
		}
		if err == nil {
			return s, nil
		}
		portTaken := s.portTaken()
		if !portTaken || attempt == startAttempts || ctx.Err() != nil {
			_ = os.RemoveAll(baseDir)
			return nil, err
		}
		s.logfIf("pgserver: port %d was taken, retrying on another port", s.port)
	}
}

// credential returns the credential to run the server binaries with: nil when
// not root, else the "postgres" system user's.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(systemUser)
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root, so initdb and postgres must run as user %q: %w", systemUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: parse uid %q of user %q: %w", u.Uid, systemUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: parse gid %q of user %q: %w", u.Gid, systemUser, err)
	}
	// Groups is empty: root's supplementary groups are dropped.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) command(ctx context.Context, cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.binDir, name)
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Dir = s.baseDir // our working directory may not be readable by the postgres user
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGQUIT,
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// childEnv is our environment without variables that would redirect the
// server or its tools elsewhere.
func childEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=")
	})
}

func (s *Server) initdb(ctx context.Context, cred *syscall.Credential) error {
	start := time.Now()
	cmd := s.command(ctx, cred, "initdb",
		"-D", s.dataDir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgserver: initdb %s: %w\n%s", s.dataDir, err, tail(out, logTailSize))
	}
	s.logfIf("pgserver: initdb %s took %v", s.dataDir, time.Since(start).Round(time.Millisecond))
	return nil
}

// start runs postgres on port and waits until it accepts connections. On
// failure the process is gone when start returns.
func (s *Server) start(ctx context.Context, port int) error {
	begin := time.Now()

	settings := map[string]string{
		"listen_addresses":   "127.0.0.1",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "300",
	}
	for k, v := range s.extra {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"-D", s.dataDir, "-p", strconv.Itoa(port), "-k", s.baseDir}
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}

	// The server outlives ctx, which only bounds the start.
	cmd := s.command(context.Background(), s.cred, "postgres", args...)
	buf := &logBuffer{logf: s.logf}
	cmd.Stdout = buf
	cmd.Stderr = buf
	proc, err := childproc.Start(cmd) // SysProcAttr (Pdeathsig) is set by s.command
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	s.mu.Lock()
	s.log, s.proc = buf, proc
	s.mu.Unlock()

	if err := s.waitReady(ctx, proc); err != nil {
		_ = s.kill()
		return fmt.Errorf("pgserver: postgres on port %d: %w\nserver log:\n%s", port, err, buf.tail())
	}
	s.logfIf("pgserver: postgres %s ready on port %d in %v", s.dataDir, port, time.Since(begin).Round(time.Millisecond))
	return nil
}

// waitReady polls until a connection succeeds, the process exits, ctx ends or
// readyTimeout passes.
func (s *Server) waitReady(ctx context.Context, proc *childproc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		attemptCtx, attemptCancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, s.URL("postgres"))
		if err == nil {
			err = conn.Ping(attemptCtx)
			_ = conn.Close(attemptCtx)
		}
		attemptCancel()
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-proc.Done():
			return fmt.Errorf("server exited before accepting connections: %v", proc.Err())
		case <-ctx.Done():
			return fmt.Errorf("not ready (%w), last connection error: %w", ctx.Err(), lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgserver: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgserver: release port %d: %w", port, err)
	}
	return port, nil
}

// Port returns the loopback TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// URL returns the connection URL for database on this server, as the
// "postgres" superuser, for example
// postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable.
func (s *Server) URL(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates the database name (any string; it is quoted as an
// identifier) and returns its connection URL.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgserver: create database %q: connect: %w", name, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgserver: create database %q: %w", name, err)
	}
	return s.URL(name), nil
}

// Stop shuts the server down (SIGQUIT, immediate shutdown), waits for it to
// exit, kills whatever is left of its process group and removes its data
// directory. It is idempotent: later calls return the first call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		if err := s.kill(); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(s.baseDir); err != nil {
			errs = append(errs, fmt.Errorf("pgserver: remove %s: %w", s.baseDir, err))
		}
		s.stopErr = errors.Join(errs...)
		s.logfIf("pgserver: stopped postgres on port %d", s.port)
	})
	return s.stopErr
}

// kill stops the current postgres process with an immediate shutdown
// (SIGQUIT) and waits for it and its process group.
func (s *Server) kill() error { return s.signalAndWait(syscall.SIGQUIT) }

// signalAndWait sends sig to the current postgres process, waits for it to
// exit (killing its process group after stopTimeout) and kills whatever is
// left of the group.
func (s *Server) signalAndWait(sig syscall.Signal) error {
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if proc == nil {
		return nil
	}
	pid := proc.Cmd.Process.Pid
	select {
	case <-proc.Done():
	default:
		if err := proc.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.logfIf("pgserver: signal postgres %d: %v", pid, err)
		}
		select {
		case <-proc.Done():
		case <-time.After(stopTimeout):
			s.logfIf("pgserver: postgres %d did not exit within %v, killing its process group", pid, stopTimeout)
			_ = killGroup(pid, syscall.SIGKILL)
			select {
			case <-proc.Done():
			case <-time.After(stopTimeout):
				return fmt.Errorf("pgserver: postgres %d did not exit after SIGKILL", pid)
			}
		}
	}
	// Children that outlived the postmaster, if any.
	_ = killGroup(pid, syscall.SIGKILL)
	return nil
}

// Shutdown stops the server as `pg_ctl stop` does by default (a fast
// shutdown: open sessions end with SQLSTATE 57P01, new connections are
// refused) and keeps its data directory and port, so that Resume can start
// it again: a database outage, for tests. Stop still removes everything.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return errors.New("pgserver: shutdown: the server is down already")
	}
	s.down = true
	s.mu.Unlock()
	err := s.signalAndWait(syscall.SIGINT)
	s.logfIf("pgserver: shut postgres on port %d down", s.port)
	return err
}

// Resume starts a server stopped by Shutdown again, on its port and data
// directory, and returns once it accepts connections. It fails if another
// process took the port meanwhile.
func (s *Server) Resume(ctx context.Context) error {
	s.mu.Lock()
	if !s.down {
		s.mu.Unlock()
		return errors.New("pgserver: resume: the server is not shut down")
	}
	s.down = false
	s.mu.Unlock()
	return s.start(ctx, s.port)
}

// portTaken reports whether the last start failed because its port was in
// use.
func (s *Server) portTaken() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log != nil && s.log.contains("already in use")
}

func killGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("pgserver: kill process group %d: %w", pgid, err)
	}
	return nil
}

func (s *Server) logfIf(format string, args ...any) {
	if s.logf != nil {
		s.logf(format, args...)
	}
}

// logBuffer collects the server's output: it keeps the tail for error
// messages and forwards complete lines to logf.
type logBuffer struct {
	mu      sync.Mutex
	buf     []byte
	partial []byte
	logf    func(format string, args ...any)
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*logTailSize {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-logTailSize:]...)
	}
	if b.logf != nil {
		b.partial = append(b.partial, p...)
		for {
			i := bytes.IndexByte(b.partial, '\n')
			if i < 0 {
				break
			}
			b.logf("postgres: %s", b.partial[:i])
			b.partial = b.partial[i+1:]
		}
		b.partial = append([]byte(nil), b.partial...)
	}
	return len(p), nil
}

func (b *logBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return tail(b.buf, logTailSize)
}

func (b *logBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf, []byte(s))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
