package bus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/internal/pgtest"
)

// IsOutage tells the database being away from a statement that failed.
func TestIsOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A connection refused: the port of a listener just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, refused := pgx.Connect(ctx, "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=5")
	// A connection attempt cut short by its context: a server that accepts
	// and never answers.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dialCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, timedOut := pgx.Connect(dialCtx, "postgres://postgres@"+hung.Addr().String()+"/x?sslmode=disable")
	// A session ended by the server, as a shutdown ends it (57P01).
	pool := pgtest.NewPool(t)
	conn, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	_, terminated := conn.Exec(ctx, "SELECT 1")
	_, afterwards := conn.Exec(ctx, "SELECT 1")
	// A statement that fails on a healthy server.
	_, failed := pool.Exec(ctx, "SELECT 1/0")

	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"marked", bus.Outage(errors.New("broker down")), true},
		{"marked and wrapped", fmt.Errorf("handler: %w", bus.Outage(errors.New("broker down"))), true},
		{"connection refused", refused, true},
		{"connection attempt timed out", timedOut, true},
		{"session terminated by the server", terminated, true},
		{"connection closed", afterwards, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"read-only server", &pgconn.PgError{Code: "25006"}, true},
		{"division by zero", failed, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"statement cancelled", &pgconn.PgError{Code: "57014"}, false},
		{"handler error", errors.New("no such pulse"), false},
		{"permanent", bus.Permanent(errors.New("bad payload")), false},
		{"deadline of the caller", fmt.Errorf("handle: %w", context.DeadlineExceeded), false},
		{"caller cancelled", context.Canceled, false},
		{"nil", nil, false},
	} {
		if tc.want && tc.err == nil {
			t.Errorf("%s: no error to classify", tc.name)
			continue
		}
		if got := bus.IsOutage(tc.err); got != tc.want {
			t.Errorf("IsOutage(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	if bus.Outage(nil) != nil {
		t.Error("Outage(nil) is not nil")
	}
}
