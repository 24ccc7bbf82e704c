package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edupulse/eventbus/bus"
)

// TestUsageNamesTheEnvironment: the help says which environment variables
// stand in for --database-url and --broker.
func TestUsageNamesTheEnvironment(t *testing.T) {
	t.Parallel()
	r := cli(t, "--help")
	for _, want := range []string{"DATABASE_URL", "EVENTBUS_BROKER", "--relay-group", "--consumer-group"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("eventbus --help does not mention %s:\n%s", want, r.stdout)
		}
	}
	for _, cmd := range [][]string{{"relay", "--help"}, {"dlq", "replay", "--help"}} {
		if r := cli(t, cmd...); !strings.Contains(r.stdout, "$EVENTBUS_BROKER") || !strings.Contains(r.stdout, "$DATABASE_URL") {
			t.Errorf("eventbus %s: %s", strings.Join(cmd, " "), r)
		}
	}
}

// TestGroupFlags: --relay-group and --consumer-group say which group they
// mean; --group, which users read as a consumer group where it meant the
// relay group, still works as before, with a warning.
func TestGroupFlags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, _ := migrated(t, 1)
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_inbox (consumer_group, event_id)
		SELECT g, gen_random_uuid() FROM unnest(ARRAY['badges', 'badges', 'notifications']) AS g`); err != nil {
		t.Fatal(err)
	}
	status := func(args ...string) (statusJSON, result) {
		t.Helper()
		r := mustCLI(t, append([]string{"status", "--json", "--database-url", url}, args...)...)
		var st statusJSON
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		return st, r
	}
	st, r := status("--relay-group", "other")
	if st.RelayGroup != "other" || r.stderr != "" || st.Inbox.Rows != 3 {
		t.Errorf("status --relay-group other: %+v, %s", st, r)
	}
	st, r = status("--group", "other")
	if st.RelayGroup != "other" || !strings.Contains(r.stderr, "--group is deprecated: it means --relay-group") {
		t.Errorf("status --group other: %+v, %s", st, r)
	}
	st, _ = status("--consumer-group", "badges")
	if st.RelayGroup != bus.ConsumerGroupDefault || st.Inbox.Rows != 2 || len(st.Inbox.Groups) != 1 || st.Inbox.Groups[0].ConsumerGroup != "badges" {
		t.Errorf("status --consumer-group badges: %+v", st)
	}
	r = mustCLI(t, "status", "--consumer-group", "badges", "--database-url", url)
	if !strings.Contains(r.stdout, "Inbox rows of badges:") || strings.Contains(r.stdout, "notifications") {
		t.Errorf("status --consumer-group badges:\n%s", r.stdout)
	}
	if r := mustCLI(t, "dlq", "list", "--consumer-group", "badges", "--database-url", url); r.stdout != "No dead letters.\n" || r.stderr != "" {
		t.Errorf("dlq list --consumer-group: %s", r)
	}
	if r := mustCLI(t, "dlq", "list", "--group", "badges", "--database-url", url); !strings.Contains(r.stderr, "it means --consumer-group") {
		t.Errorf("dlq list --group: %s", r)
	}
	if r := cli(t, "dlq", "park", "0", "--relay-group", "other", "--database-url", url); r.code != exitError || !strings.Contains(r.stderr, `unknown relay group "other"`) {
		t.Errorf("dlq park --relay-group other: %s", r)
	}
}

// TestRelayRefusesAnInProcessBroker: a relay command publishing to
// gochannel:// would acknowledge every event to nobody: refused, before
// the database is even opened, unless asked for; then it warns.
func TestRelayRefusesAnInProcessBroker(t *testing.T) {
	t.Parallel()
	r := cli(t, "relay", "--broker", "gochannel://", "--database-url", "postgres://nobody@127.0.0.1:1/db")
	if r.code != exitUsage || !strings.Contains(r.stderr, "gochannel:// is an in-process broker") || !strings.Contains(r.stderr, "--allow-in-process") {
		t.Errorf("relay --broker gochannel://: %s", r)
	}
	var env = map[string]string{"EVENTBUS_BROKER": "gochannel://"}
	a := &app{getenv: func(k string) string { return env[k] }}
	var stdout, stderr syncBuffer
	a.stdout, a.stderr = &stdout, &stderr
	if code := a.main(context.Background(), []string{"relay", "--database-url", "postgres://nobody@127.0.0.1:1/db"}); code != exitUsage ||
		!strings.Contains(stderr.String(), "in-process broker") {
		t.Errorf("relay with EVENTBUS_BROKER=gochannel://: exit %d, %s", code, stderr.String())
	}

	url, pool, ob := migrated(t, 1)
	publish(t, pool, ob, scenario(2)...)
	bg := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := bg.stop(t); r.code != exitOK || !strings.Contains(r.stderr, "In-process broker: the events are acknowledged and dropped") {
		t.Errorf("relay --allow-in-process: %s", r)
	}
}
