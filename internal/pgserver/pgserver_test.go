package pgserver_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/internal/pgserver"
)

func startServer(t *testing.T, opts pgserver.Options) *pgserver.Server {
	t.Helper()
	if _, err := pgserver.FindBinDir(); errors.Is(err, pgserver.ErrNoBinaries) && os.Getenv("CI") != "true" {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return srv
}

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	srv := startServer(t, pgserver.Options{
		Logf:          t.Logf,
		ExtraSettings: map[string]string{"work_mem": "7MB"},
	})
	t.Logf("started in %v", time.Since(begin))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const dbName = "Lifecycle-Test"
	dbURL, err := srv.CreateDatabase(ctx, dbName)
	if err != nil {
		t.Fatalf("CreateDatabase: %v", err)
	}
	if want := srv.URL(dbName); dbURL != want {
		t.Errorf("CreateDatabase URL = %q, want %q", dbURL, want)
	}
	wantPrefix := "postgres://postgres@127.0.0.1:" + strconv.Itoa(srv.Port()) + "/"
	if got := srv.URL("x"); got != wantPrefix+"x?sslmode=disable" {
		t.Errorf("URL(x) = %q", got)
	}

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", dbURL, err)
	}
	var one int
	var db, workMem string
	if err := conn.QueryRow(ctx, "SELECT 1, current_database(), current_setting('work_mem')").Scan(&one, &db, &workMem); err != nil {
		t.Fatalf("SELECT 1: %v", err)
	}
	if one != 1 || db != dbName || workMem != "7MB" {
		t.Errorf("got (%d, %q, %q), want (1, %q, 7MB)", one, db, workMem, dbName)
	}
	if err := conn.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}

	if _, err := srv.CreateDatabase(ctx, dbName); err == nil {
		t.Errorf("creating %q twice succeeded", dbName)
	}

	dataDir := srv.BaseDir()
	if _, err := os.Stat(dataDir); err != nil {
		t.Errorf("data directory: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port()))
	begin = time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stopped in %v", time.Since(begin))
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s still exists after Stop (stat: %v)", dataDir, err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Errorf("%s still accepts connections after Stop", addr)
	}
}

func TestStartFailsWithLog(t *testing.T) {
	t.Parallel()
	if _, err := pgserver.FindBinDir(); err != nil {
		t.Skipf("no PostgreSQL binaries: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{ExtraSettings: map[string]string{"no_such_setting": "1"}})
	if err == nil {
		_ = srv.Stop()
		t.Fatal("Start with an unknown setting succeeded")
	}
	t.Logf("error (expected): %v", err)
	if want := "no_such_setting"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not mention %q from the server log", err, want)
	}
}

func TestStartWrongBinDir(t *testing.T) {
	t.Parallel()
	_, err := pgserver.Start(context.Background(), pgserver.Options{BinDir: t.TempDir()})
	if !errors.Is(err, pgserver.ErrNoBinaries) {
		t.Fatalf("Start with empty BinDir error = %v, want ErrNoBinaries", err)
	}
}

// Shutdown stops the server as pg_ctl stop does (open sessions end with
// 57P01, new connections are refused) and Resume starts it again on the same
// port with the same data.
func TestShutdownResume(t *testing.T) {
	t.Parallel()
	srv := startServer(t, pgserver.Options{ExtraSettings: map[string]string{"work_mem": "7MB"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbURL, err := srv.CreateDatabase(ctx, "outage")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Resume(ctx); err == nil {
		t.Error("Resume of a running server succeeded")
	}
	port := srv.Port()
	if err := srv.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := srv.Shutdown(); err == nil {
		t.Error("second Shutdown succeeded")
	}
	// The open session was ended by the server; new connections are refused.
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a session survived Shutdown")
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		_ = c.Close()
		t.Error("the server accepts connections after Shutdown")
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if srv.Port() != port {
		t.Errorf("port %d after Resume, want %d", srv.Port(), port)
	}
	conn2, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect after Resume: %v", err)
	}
	defer conn2.Close(context.Background())
	var n int
	var workMem string
	if err := conn2.QueryRow(ctx, "SELECT n, current_setting('work_mem') FROM kept").Scan(&n, &workMem); err != nil {
		t.Fatal(err)
	}
	if n != 42 || workMem != "7MB" {
		t.Errorf("after Resume: n = %d, work_mem = %s; want 42 and 7MB", n, workMem)
	}
}
