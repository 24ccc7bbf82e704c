package pgdsn

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ dsn, want, secret string }{
		// URLs of any scheme, parsable or not.
		{"postgres://alice:s3cret@localhost:5432/db", "postgres://alice:xxxxx@localhost:5432/db", "s3cret"},
		{"postgresql://alice:s3cret@h1:5432,h2:5433/db?sslmode=disable", "postgresql://alice:xxxxx@h1:5432,h2:5433/db?sslmode=disable", "s3cret"},
		{"mysql://alice:s3cret@localhost:3306/db", "mysql://alice:xxxxx@localhost:3306/db", "s3cret"},
		{"mysql://alice@localhost:3306/db", "mysql://alice@localhost:3306/db", ""},
		{"mysql://alice:s3cret@tcp(localhost:3306)/db?parseTime=true", "mysql://alice:xxxxx@tcp(localhost:3306)/db?parseTime=true", "s3cret"},
		{"mysql://alice:pa/ss@localhost/db", "mysql://alice:xxxxx@localhost/db", "pa/ss"},
		{"mysql://alice:pa?ss@localhost/db", "mysql://alice:xxxxx@localhost/db", "pa?ss"},
		{"mysql://alice:p@ss@localhost/db", "mysql://alice:xxxxx@localhost/db", "p@ss"},
		{"mysql://alice:p%40ss@localhost/db", "mysql://alice:xxxxx@localhost/db", "p%40ss"},
		{"sqlserver://sa:Str0ng#Pw@db:1433?database=x", "sqlserver://sa:xxxxx@db:1433?database=x", "Str0ng#Pw"},
		{"postgres://alice@localhost/db?password=s3cret&sslmode=disable", "postgres://alice@localhost/db?password=xxxxx&sslmode=disable", "s3cret"},
		{"postgres://localhost/db?options=a@b", "postgres://localhost/db?options=a@b", ""},
		{"postgres:///db?host=/tmp", "postgres:///db?host=/tmp", ""},
		// Keyword/value DSNs.
		{"host=localhost port=5432 user=alice password=s3cret dbname=db", "host=localhost port=5432 user=alice password=xxxxx dbname=db", "s3cret"},
		{"host=localhost password='s3 cr\\'et' dbname=db", "host=localhost password=xxxxx dbname=db", "s3 cr'et"},
		{"host=localhost password = s3cret", "host=localhost password = xxxxx", "s3cret"},
		{"host=localhost user=alice", "host=localhost user=alice", ""},
		// Go's MySQL driver's DSN.
		{"alice:s3cret@tcp(localhost:3306)/db", "alice:xxxxx@tcp(localhost:3306)/db", "s3cret"},
		{"alice:s3/cr@et@tcp(localhost:3306)/db?x=1", "alice:xxxxx@tcp(localhost:3306)/db?x=1", "s3/cr@et"},
		{"alice@unix(/tmp/mysql.sock)/db", "alice@unix(/tmp/mysql.sock)/db", ""},
		// Nothing to mask.
		{"not a dsn", "not a dsn", ""},
		{"", "", ""},
	} {
		got := Redact(tc.dsn)
		if got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		if tc.secret != "" && strings.Contains(got, tc.secret) {
			t.Errorf("Redact(%q) = %q: the password is still there", tc.dsn, got)
		}
		if tc.secret != "" {
			if s := Scrub("error near "+tc.secret+" in "+tc.dsn, tc.dsn); strings.Contains(s, tc.secret) {
				t.Errorf("Scrub with %q left the password: %q", tc.dsn, s)
			}
		}
	}
	// An escaped password is masked in its unescaped form too.
	if s := Scrub("user alice, password p@ss", "mysql://alice:p%40ss@localhost/db"); s != "user alice, password xxxxx" {
		t.Errorf("Scrub of the unescaped password: %q", s)
	}
}

// TestConnectRefusedOnce: a refused connection is reported in one line,
// its dial error once, with the DSN redacted; pgx dials twice under
// sslmode=prefer (the default) and reports both.
func TestConnectRefusedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://alice:s3cret@" + addr + "/db",
		"host=127.0.0.1 port=" + addr[strings.LastIndex(addr, ":")+1:] + " user=alice password=s3cret dbname=db",
	} {
		_, err := Connect(ctx, dsn, Options{})
		if err == nil {
			t.Fatalf("Connect(%q) succeeded", dsn)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "database unreachable at "+Redact(dsn)+": ") || strings.Count(msg, "connection refused") != 1 ||
			strings.Contains(msg, "\n") || strings.Contains(msg, "s3cret") {
			t.Errorf("Connect(%q): %q; want one line, the refusal once, no password", dsn, msg)
		}
	}

	_, err = Connect(ctx, "mysql://alice@localhost:3306/db", Options{})
	if err == nil || err.Error() != "malformed database URL mysql://alice@localhost:3306/db: failed to parse as keyword/value (invalid keyword/value)" {
		t.Errorf("Connect of a mysql URL: %v", err)
	}

	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := Connect(cctx, "postgres://alice@"+addr+"/db", Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect with an ended context: %v", err)
	}
}
