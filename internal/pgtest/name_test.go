package pgtest

import (
	"regexp"
	"strings"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	valid := regexp.MustCompile(`^t_([a-z0-9_]*_)?[0-9a-f]{8}$`)
	for _, tc := range []struct{ test, prefix string }{
		{"TestFoo", "t_testfoo_"},
		{"TestFoo/Sub_Case#01", "t_testfoo_sub_case_01_"},
		{"TestÜber/ /--x", "t_test_ber_x_"},
		{"///", "t_"},
		{strings.Repeat("A", 200), "t_" + strings.Repeat("a", 52) + "_"},
		{strings.Repeat("ab/", 40), "t_ab_ab"},
	} {
		name, err := databaseName(tc.test)
		if err != nil {
			t.Fatal(err)
		}
		if !valid.MatchString(name) || !strings.HasPrefix(name, tc.prefix) || len(name) > maxIdentifierLen || strings.Contains(name, "__") {
			t.Errorf("databaseName(%q) = %q (len %d), want prefix %q, at most 63 bytes, matching %v",
				tc.test, name, len(name), tc.prefix, valid)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ base, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/t_x?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/t_x"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=t_x"},
	} {
		got, err := withDatabase(tc.base, "t_x")
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.base, got, err, tc.want)
		}
	}
}
