package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
	"github.com/edupulse/eventbus/schema"
)

// The EduPulse scenario of the golden files: fixed ids and times, so that
// lanes and payloads do not change between runs.
var (
	t0       = time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	author   = uuid.MustParse("a0000000-0000-4000-8000-000000000001")
	students = []uuid.UUID{
		uuid.MustParse("50000000-0000-4000-8000-000000000001"),
		uuid.MustParse("50000000-0000-4000-8000-000000000002"),
	}
	pulses = []uuid.UUID{
		uuid.MustParse("90000000-0000-4000-8000-000000000001"),
		uuid.MustParse("90000000-0000-4000-8000-000000000002"),
		uuid.MustParse("90000000-0000-4000-8000-000000000003"),
	}
)

// scenario returns n EduPulse events: pulses created and answered, a
// lesson, a badge.
func scenario(n int) []bus.Event {
	var evs []bus.Event
	for i := 0; len(evs) < n; i++ {
		p := pulses[i%len(pulses)]
		at := t0.Add(time.Duration(len(evs)) * time.Minute)
		switch i % 4 {
		case 0:
			evs = append(evs, gen.NewPulseCreated(p, author, fmt.Sprintf("Fractions %d", i), at))
		case 1:
			evs = append(evs, gen.NewPulseAnswered(p, uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("answer", i))), students[i%2], at))
		case 2:
			evs = append(evs, gen.NewLessonPublished(uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("lesson", i))), author, "Decimals", at))
		case 3:
			evs = append(evs, gen.NewBadgeAwarded(uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("badge", i))), students[i%2], "first answer", at))
		}
	}
	return evs
}

func TestUsage(t *testing.T) {
	t.Parallel()
	r := cli(t)
	if r.code != exitUsage || !strings.Contains(r.stderr, "Usage: eventbus") {
		t.Errorf("no arguments: %s", r)
	}
	r = cli(t, "help")
	if r.code != exitOK || r.stdout != usageText {
		t.Errorf("help: %s", r)
	}
	golden(t, "usage.txt", r.stdout)
	if r := cli(t, "--help"); r.code != exitOK || r.stdout != usageText {
		t.Errorf("--help: %s", r)
	}
	if r := cli(t, "status", "--help"); r.code != exitOK || !strings.Contains(r.stdout, "-group") {
		t.Errorf("status --help: %s", r)
	}
	for _, args := range [][]string{
		{"frobnicate"},
		{"dlq"},
		{"dlq", "rewind", "1"},
		{"dlq", "show"},
		{"dlq", "show", "1", "2"},
		{"dlq", "park"},
		{"dlq", "park", "-1", "--database-url", "postgres://x"},
		{"dlq", "show", "abc", "--database-url", "postgres://x"},
		{"status", "--bogus"},
		{"tail", "-n", "-1", "--database-url", "postgres://x"},
		{"migrate", "--lanes", "1000", "--database-url", "postgres://x"},
		{"relay", "--database-url", "postgres://x", "--broker", "gochannel://", "--lanes", "x"},
	} {
		if r := cli(t, args...); r.code != exitUsage || !strings.HasPrefix(r.stderr, "eventbus") && !strings.HasPrefix(r.stderr, "Usage") {
			t.Errorf("eventbus %s: want a usage error (exit 2): %s", strings.Join(args, " "), r)
		}
	}
	// No --database-url and no $DATABASE_URL.
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, registry: gen.Registry()}
	if code := a.main(context.Background(), []string{"status"}); code != exitUsage || !strings.Contains(stderr.String(), "DATABASE_URL") {
		t.Errorf("status without a database: exit %d, %s", code, stderr.String())
	}
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	url, _ := newDB(t)
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	versions := make([]string, len(ms))
	for i, m := range ms {
		versions[i] = fmt.Sprintf("%03d", m.Version)
	}
	if r := mustCLI(t, "migrate", "--database-url", url, "--lanes", "3"); r.stdout != "Applied migration "+strings.Join(versions, ", ")+"; 3 lanes.\n" {
		t.Errorf("first migrate: %s", r)
	}
	if r := mustCLI(t, "migrate", "--database-url", url); r.stdout != "Schema up to date; 3 lanes.\n" {
		t.Errorf("second migrate: %s", r)
	}
	r := mustCLI(t, "--json", "migrate", "--database-url", url, "--lanes", "5")
	var res struct {
		Applied []int `json:"applied"`
		Lanes   int   `json:"lanes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Applied) != 0 || res.Lanes != 5 {
		t.Errorf("migrate --json: %+v, %v: %s", res, err, r)
	}
	if r := cli(t, "migrate", "--database-url", url, "--lanes", "2"); r.code != exitError || !strings.Contains(r.stderr, "lanes cannot be removed") {
		t.Errorf("removing lanes: %s", r)
	}
	mustCLI(t, "migrate", "--database-url", url, "--wakeup", "poll")
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if notify, err := schema.Notify(context.Background(), pool); err != nil || notify {
		t.Errorf("after --wakeup poll: notify %v, %v; want false", notify, err)
	}
	if r := cli(t, "migrate", "--database-url", url, "--wakeup", "sometimes"); r.code != exitUsage || !strings.Contains(r.stderr, "want notify or poll") {
		t.Errorf("bad --wakeup: %s", r)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	url, pool, ob := migrated(t, 4)

	// Empty.
	r := mustCLI(t, "status", "--database-url", url)
	for _, want := range []string{"LANE  BACKLOG  OLDEST PENDING  STORED  LAST RELAYED", "all   0        -", "Relay dead letters:", "Consumer dead letters:", "Inbox rows:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("empty status lacks %q:\n%s", want, r.stdout)
		}
	}
	st := statusJSONOf(t, url)
	if len(st.Lanes) != 4 || st.Backlog != 0 || st.DeadLetters != 0 || st.Inbox.Rows != 0 || st.RelayGroup != bus.ConsumerGroupDefault {
		t.Errorf("empty status: %+v", st)
	}

	// Events published: the backlog of each lane counts its events.
	evs := scenario(10)
	publish(t, pool, ob, evs...)
	want := map[int]int64{}
	for _, ev := range evs {
		want[bus.LaneOf(ev.Envelope().AggregateID, 4)]++
	}
	st = statusJSONOf(t, url)
	if st.Backlog != int64(len(evs)) {
		t.Errorf("backlog %d, want %d", st.Backlog, len(evs))
	}
	for _, l := range st.Lanes {
		if l.Backlog != want[l.Lane] || l.Stored != want[l.Lane] || l.RelayedOffset != 0 || l.LastRelayedEventAgeSeconds != nil {
			t.Errorf("lane %d: %+v, want backlog and stored %d, nothing relayed", l.Lane, l, want[l.Lane])
		}
		if (l.Backlog > 0) != (l.OldestPendingAgeSeconds > 0) {
			t.Errorf("lane %d: backlog %d but oldest pending age %v", l.Lane, l.Backlog, l.OldestPendingAgeSeconds)
		}
	}

	// Relayed: no backlog; progress per lane. Another group still has it all.
	relay := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := relay.stop(t); r.code != exitOK {
		t.Fatalf("relay: %s", r)
	}
	st = statusJSONOf(t, url)
	if st.Backlog != 0 {
		t.Errorf("backlog after relaying = %d", st.Backlog)
	}
	for _, l := range st.Lanes {
		if want[l.Lane] > 0 && (l.RelayedOffset == 0 || l.LastRelayedEventAgeSeconds == nil || l.Stored != want[l.Lane]) {
			t.Errorf("lane %d after relaying: %+v", l.Lane, l)
		}
	}
	if st := statusJSONOf(t, url, "--group", "other"); st.Backlog != int64(len(evs)) || st.RelayGroup != "other" {
		t.Errorf("status of another group: %+v", st)
	}
}

// TestStatusMarksEstimates: a lane table above observe.ExactCountMaxBytes
// shows its stored rows as the planner's estimate, marked "~" with a note
// (and stored_estimated in --json), while the backlog stays exact.
func TestStatusMarksEstimates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 4)
	evs := scenario(8)
	publish(t, pool, ob, evs...)
	lane := bus.LaneOf(evs[0].Envelope().AggregateID, 4)
	table := pgx.Identifier{"watermill_" + schema.LaneTopic(lane)}.Sanitize()
	if _, err := pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (uuid, created_at, payload, metadata, transaction_id)
		SELECT gen_random_uuid()::text, o.created_at, o.payload, o.metadata, pg_current_xact_id()
		FROM (SELECT * FROM %s LIMIT 1) o, generate_series(1, 6000)`, table, table)); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE"); err != nil { // as autovacuum would
		t.Fatal(err)
	}
	st := statusJSONOf(t, url)
	if st.Backlog != int64(len(evs))+6000 {
		t.Errorf("backlog %d, want %d exactly", st.Backlog, len(evs)+6000)
	}
	for _, l := range st.Lanes {
		if l.StoredEstimated != (l.Lane == lane) {
			t.Errorf("lane %d: %+v, want stored_estimated only for lane %d", l.Lane, l, lane)
		}
	}
	r := mustCLI(t, "status", "--database-url", url)
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < lane+2 || !strings.Contains(lines[lane+1], "  ~") || !strings.Contains(r.stdout, "~ marks PostgreSQL's planner estimates") {
		t.Errorf("status does not mark lane %d's stored rows as an estimate:\n%s", lane, r.stdout)
	}
}

func statusJSONOf(t *testing.T, url string, args ...string) statusJSON {
	t.Helper()
	r := mustCLI(t, append([]string{"status", "--json", "--database-url", url}, args...)...)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json does not parse: %v\n%s", err, r.stdout)
	}
	return st
}

// TestStatusGolden produces testdata/status.txt: a few events relayed,
// some pending, inbox rows and a dead letter; ages are set in the database
// so that the output is stable.
func TestStatusGolden(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 4)
	evs := scenario(9)
	publish(t, pool, ob, evs[:6]...)
	relay := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := relay.stop(t); r.code != exitOK {
		t.Fatalf("relay: %s", r)
	}
	publish(t, pool, ob, evs[6:]...)
	var lastRelayed int64
	if err := pool.QueryRow(ctx, `SELECT max(offset_acked) FROM eventbus_offsets`).Scan(&lastRelayed); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_inbox (consumer_group, event_id)
		SELECT g, gen_random_uuid() FROM unnest(ARRAY['badges', 'badges', 'badges', 'notifications', 'notifications']) AS g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO eventbus_dead_letters (lane, message_uuid, payload, error, attempts, first_failed_at)
		VALUES (0, $1, '\x00', 'malformed outbox row: no destination_topic', 5, now())`, uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	// Relayed rows were written 10 minutes (plus a minute per lane) ago,
	// pending ones 42 seconds (plus 7 per lane) ago. The ages shown are
	// whole seconds only if both commands run within a second of setting
	// them: on a loaded machine, set them again until they do.
	var text, js string
	for attempt := 1; ; attempt++ {
		start := time.Now()
		if _, err := pool.Exec(ctx, `UPDATE eventbus_outbox SET created_at = now() - make_interval(secs =>
			CASE WHEN "offset" <= $1 THEN 600 + 60 * lane ELSE 42 + 7 * lane END)`, lastRelayed); err != nil {
			t.Fatal(err)
		}
		text = mustCLI(t, "status", "--database-url", url).stdout
		js = mustCLI(t, "status", "--json", "--database-url", url).stdout
		if took := time.Since(start); took < time.Second {
			break
		} else if attempt == 20 {
			t.Fatalf("status never ran within a second of setting the ages (last: %s)", took)
		}
	}
	golden(t, "status.txt", normalize(text))
	golden(t, "status.json", normalizeStatusJSON(t, js))
}

// normalizeStatusJSON rounds the ages of status --json down to the second.
func normalizeStatusJSON(t *testing.T, s string) string {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		t.Fatal(err)
	}
	for i := range st.Lanes {
		l := &st.Lanes[i]
		l.OldestPendingAgeSeconds = float64(int64(l.OldestPendingAgeSeconds))
		if l.LastRelayedEventAgeSeconds != nil {
			v := float64(int64(*l.LastRelayedEventAgeSeconds))
			l.LastRelayedEventAgeSeconds = &v
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// deadLetterRow inserts an outbox row that is no forwarder envelope and
// runs a real relay until it dead-letters it.
func deadLetterRow(t *testing.T, pool *pgxpool.Pool, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, '{"hello": "world"}', '{"event_name": "edupulse.pulse.created"}', pg_current_xact_id())`, id); err != nil {
		t.Fatal(err)
	}
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	defer gc.Close()
	r, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: gc, MaxAttempts: 2, PollInterval: 100 * time.Millisecond,
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	waitFor(t, "the dead letter", func() bool {
		n, err := bus.NewDeadLetters(pool).Count(ctx)
		return err == nil && n == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("relay: %v", err)
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, _ := migrated(t, 1)
	db := []string{"--database-url", url}
	if r := mustCLI(t, append([]string{"dlq", "list"}, db...)...); r.stdout != "No dead letters.\n" {
		t.Errorf("empty dlq list: %s", r)
	}
	badID := uuid.NewString()
	deadLetterRow(t, pool, badID)

	// list, human and JSON.
	r := mustCLI(t, append([]string{"dlq", "list"}, db...)...)
	golden(t, "dlq_list.txt", normalize(r.stdout))
	r = mustCLI(t, append([]string{"dlq", "list", "--json"}, db...)...)
	var list []deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("dlq list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 1 || list[0].ID != 1 || list[0].EventID != badID || list[0].Attempts != 2 || list[0].ReplayedAt != nil ||
		!strings.Contains(list[0].Error, "malformed outbox row") || list[0].DeadAt.IsZero() {
		t.Fatalf("dlq list --json: %+v", list)
	}

	// show.
	r = mustCLI(t, append([]string{"dlq", "show", "1"}, db...)...)
	golden(t, "dlq_show.txt", normalize(r.stdout))

	// Replaying the malformed row is refused; fixed, it goes back to the
	// outbox under its id.
	r = cli(t, append([]string{"dlq", "replay", "1"}, db...)...)
	if r.code != exitError || !strings.Contains(r.stderr, "fix the payload first") || !strings.Contains(r.stderr, "eventbus dlq fix") {
		t.Errorf("replay of a malformed row: %s", r)
	}
	fixed := gen.NewPulseCreated(pulses[0], author, "Fixed", t0)
	msg, err := gen.Registry().NewMessage(ctx, fixed)
	if err != nil {
		t.Fatal(err)
	}
	payload := fmt.Sprintf(`{"destination_topic":%q,"uuid":%q,"payload":%q,"metadata":{"event_name":"edupulse.pulse.created","event_version":"1","aggregate_id":%q}}`,
		fixed.EventName(), badID, base64.StdEncoding.EncodeToString(msg.Payload), fixed.Envelope().AggregateID)
	file := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(file, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mustCLI(t, append([]string{"dlq", "fix", "1", file}, db...)...); !strings.Contains(r.stdout, "Fixed dead letter 1") {
		t.Errorf("dlq fix: %s", r)
	}
	r = mustCLI(t, append([]string{"dlq", "show", "1", "--json"}, db...)...)
	var shown deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil {
		t.Fatalf("dlq show --json: %v\n%s", err, r.stdout)
	}
	if shown.Event == nil || shown.Event.Name != "edupulse.pulse.created" || shown.Event.Error != "" || shown.Event.Topic != fixed.EventName() {
		t.Fatalf("dlq show --json of the fixed letter: %+v", shown.Event)
	}
	var title struct{ Title string }
	if err := json.Unmarshal(shown.Event.Payload, &title); err != nil || title.Title != "Fixed" {
		t.Errorf("dlq show --json: event payload %s: %+v, %v", shown.Event.Payload, title, err)
	}
	if r := mustCLI(t, append([]string{"dlq", "replay", "1"}, db...)...); !strings.Contains(r.stdout, "Replayed dead letter 1: event "+badID+" is back in outbox lane 0.") {
		t.Errorf("dlq replay: %s", r)
	}
	var copies int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM watermill_eventbus_lane_0 WHERE uuid = $1`, badID).Scan(&copies); err != nil || copies != 2 {
		t.Errorf("outbox rows of the replayed event: %d, %v; want the original and the replay", copies, err)
	}
	if r := mustCLI(t, append([]string{"dlq", "list"}, db...)...); r.stdout != "No dead letters.\n" {
		t.Errorf("dlq list after the replay: %s", r)
	}
	if r := mustCLI(t, append([]string{"dlq", "list", "--all"}, db...)...); !strings.Contains(r.stdout, "REPLAYED AT") || !strings.Contains(r.stdout, badID) {
		t.Errorf("dlq list --all: %s", r)
	}

	// discard, then the id is unknown.
	if r := mustCLI(t, append([]string{"--json", "dlq", "discard", "1"}, db...)...); strings.TrimSpace(r.stdout) != "{\n  \"id\": 1,\n  \"action\": \"discarded\"\n}" {
		t.Errorf("dlq discard --json: %s", r)
	}
	for _, cmd := range []string{"show", "replay", "discard"} {
		r := cli(t, append([]string{"dlq", cmd, "1"}, db...)...)
		if r.code != exitError || r.stderr != "eventbus: no dead letter with id 1 (see `eventbus dlq list --all`)\n" {
			t.Errorf("dlq %s of an unknown id: %s", cmd, r)
		}
	}
}

// insertRaw writes an outbox row by hand, as another producer (or a bug)
// could.
func insertRaw(t *testing.T, pool *pgxpool.Pool, id, payload, metadata string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `INSERT INTO watermill_eventbus_lane_0 (uuid, payload, metadata, transaction_id)
		VALUES ($1, $2, $3, pg_current_xact_id())`, id, payload, metadata); err != nil {
		t.Fatal(err)
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	url, pool, ob := migrated(t, 4)
	db := []string{"--database-url", url}
	evs := scenario(4)
	publish(t, pool, ob, evs[:2]...)
	unknownID := uuid.NewString()
	insertRaw(t, pool, unknownID, fmt.Sprintf(`{"destination_topic":"edupulse.pulse.exploded","uuid":%q,"payload":%q,"metadata":{"event_name":"edupulse.pulse.exploded","event_version":"1","aggregate_id":"p-1"}}`,
		unknownID, base64.StdEncoding.EncodeToString([]byte(`{"boom": true}`))), `{"event_name": "edupulse.pulse.exploded"}`)
	insertRaw(t, pool, uuid.NewString(), `{"hello": "world"}`, `{"event_name": "edupulse.pulse.created"}`)
	publish(t, pool, ob, evs[2:]...)

	r := mustCLI(t, append([]string{"tail", "--from-start"}, db...)...)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("tail --from-start printed %d lines, want 6:\n%s", len(lines), r.stdout)
	}
	for i, ev := range evs {
		line := lines[i]
		if i >= 2 {
			line = lines[i+2]
		}
		if !strings.Contains(line, ev.EventName()+"/v1") || !strings.Contains(line, "id="+ev.Envelope().ID.String()) {
			t.Errorf("line for %s %s: %s", ev.EventName(), ev.Envelope().ID, line)
		}
	}
	// The command knows no event types: an event of a name no code declares
	// prints as any other.
	if !strings.Contains(lines[2], "edupulse.pulse.exploded/v1 aggregate=p-1 id="+unknownID+` {"boom":true}`) {
		t.Errorf("unknown event line: %s", lines[2])
	}
	if !strings.Contains(lines[3], "malformed outbox row") || !strings.Contains(lines[3], `{"hello":"world"}`) {
		t.Errorf("malformed row line: %s", lines[3])
	}
	golden(t, "tail.txt", normalize(r.stdout))

	// -n: the last ones only.
	r = mustCLI(t, append([]string{"tail", "-n", "2"}, db...)...)
	if got := strings.Count(r.stdout, "\n"); got != 2 || !strings.Contains(r.stdout, evs[3].Envelope().ID.String()) {
		t.Errorf("tail -n 2:\n%s", r.stdout)
	}

	// --json: one object per line.
	r = mustCLI(t, append([]string{"tail", "--from-start", "--json"}, db...)...)
	var got []tailEvent
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var ev tailEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("tail --json line %q: %v", sc.Text(), err)
		}
		got = append(got, ev)
	}
	if len(got) != 6 {
		t.Fatalf("tail --json: %d events, want 6", len(got))
	}
	first := evs[0].(gen.PulseCreated)
	var payload struct {
		PulseID uuid.UUID `json:"pulse_id"`
		Title   string    `json:"title"`
	}
	if err := json.Unmarshal(got[0].Payload, &payload); err != nil || payload.PulseID != first.PulseID || payload.Title != first.Title {
		t.Errorf("tail --json payload %s: %+v, %v", got[0].Payload, payload, err)
	}
	if got[0].Name != first.EventName() || got[0].Version != 1 || got[0].AggregateType != "pulse" || got[0].Offset == 0 ||
		got[0].OccurredAt == nil || got[0].Topic != first.EventName() {
		t.Errorf("tail --json event: %+v", got[0])
	}
	if got[2].Error != "" || got[3].Error == "" || got[0].Error != "" {
		t.Errorf("tail --json errors: %q %q %q", got[0].Error, got[2].Error, got[3].Error)
	}
}

// TestTailFollow: events are printed as they commit, once each, including
// one whose transaction started (and took its transaction id) before
// others that committed first.
func TestTailFollow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 2)
	old := scenario(3)
	publish(t, pool, ob, old...)
	bg := cliBackground(t, "tail", "--database-url", url, "--follow", "-n", "1", "--interval", "100ms")
	waitFor(t, "the last old event", func() bool { return strings.Contains(bg.stdout.String(), old[2].Envelope().ID.String()) })

	late := gen.NewPulseCreated(pulses[1], author, "late", t0)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := ob.Publish(ctx, tx, late); err != nil {
		t.Fatal(err)
	}
	early := gen.NewPulseCreated(pulses[2], author, "early", t0)
	publish(t, pool, ob, early)
	waitFor(t, "the early event", func() bool { return strings.Contains(bg.stdout.String(), early.Envelope().ID.String()) })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the late event", func() bool { return strings.Contains(bg.stdout.String(), late.Envelope().ID.String()) })
	time.Sleep(300 * time.Millisecond) // a few more rounds: nothing twice
	r := bg.stop(t)
	if r.code != exitOK {
		t.Fatalf("tail --follow: %s", r)
	}
	if n := strings.Count(r.stdout, "\n"); n != 3 {
		t.Errorf("tail --follow printed %d lines, want 3 (the last old event, early, late):\n%s", n, r.stdout)
	}
	for _, ev := range old[:2] {
		if strings.Contains(r.stdout, ev.Envelope().ID.String()) {
			t.Errorf("tail -n 1 printed an older event %s", ev.Envelope().ID)
		}
	}
}

func TestRelayCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 2)
	evs := scenario(8)
	publish(t, pool, ob, evs...)
	// The postgres broker on the same database: the events land in
	// watermill_<topic> tables.
	bg := cliBackground(t, "relay", "--database-url", url, "--broker", url, "--metrics-addr", "127.0.0.1:0", "--poll-interval", "100ms")
	waitDrained(t, pool)
	var metricsURL string
	waitFor(t, "the metrics address", func() bool {
		m := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(bg.stderr.String())
		if m != nil {
			metricsURL = m[1]
		}
		return m != nil
	})
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`eventbus_outbox_backlog{lane="0"} 0`, `eventbus_outbox_backlog{lane="1"} 0`, "eventbus_relay_published_total{lane=", "eventbus_status_up 1", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if res, done := bg.exited(); done {
		t.Fatalf("relay exited: %s", res)
	}
	r := bg.stop(t)
	if r.code != exitOK || !strings.Contains(r.stderr, "Relay started") || !strings.Contains(r.stderr, "Relay stopped") {
		t.Fatalf("relay: %s", r)
	}
	counts := map[string]int{}
	for _, ev := range evs {
		counts[ev.EventName()]++
	}
	for topic, want := range counts {
		var n int
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s`, pgx.Identifier{"watermill_" + topic}.Sanitize())).Scan(&n); err != nil || n != want {
			t.Errorf("broker topic %s holds %d events (%v), want %d", topic, n, err, want)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3tPassw0rd"
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"malformed URL", "postgres://alice:" + secret + "@localhost:notaport/db", "malformed database URL postgres://alice:xxxxx@localhost:notaport/db"},
		{"malformed DSN", "host=localhost port=x password=" + secret, "malformed database URL"},
		{"unreachable URL", "postgres://alice:" + secret + "@127.0.0.1:1/db?connect_timeout=5", "database unreachable at postgres://alice:xxxxx@127.0.0.1:1/db"},
		{"unreachable DSN", "host=127.0.0.1 port=1 user=alice password='" + secret + "' dbname=db connect_timeout=5", "database unreachable at host=127.0.0.1 port=1 user=alice password=xxxxx"},
		// Other databases' URLs and DSNs: masked as written, nothing else changed.
		{"mysql URL", "mysql://alice:" + secret + "@tcp(localhost:3306)/db", "malformed database URL mysql://alice:xxxxx@tcp(localhost:3306)/db: "},
		{"mysql URL, user only", "mysql://alice@localhost:3306/db", "malformed database URL mysql://alice@localhost:3306/db: "},
		{"mysql DSN", "alice:" + secret + "@tcp(localhost:3306)/db", "malformed database URL alice:xxxxx@tcp(localhost:3306)/db: "},
	} {
		for _, cmd := range [][]string{{"status"}, {"migrate"}, {"dlq", "list"}} {
			r := cli(t, append(cmd, "--database-url", tc.dsn)...)
			if r.code != exitError || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%s, %s: want exit 1 and %q: %s", tc.name, cmd, tc.want, r)
			}
			if strings.Contains(r.stderr+r.stdout, secret) {
				t.Errorf("%s, %s: the password leaked: %s", tc.name, cmd, r)
			}
			// pgx dials twice (sslmode=prefer): the refusal is told once.
			if strings.Contains(tc.name, "unreachable") && (strings.Count(r.stderr, "connection refused") != 1 || strings.Count(r.stderr, "\n") != 1) {
				t.Errorf("%s, %s: want the refusal once, on one line: %s", tc.name, cmd, r)
			}
		}
	}

	// A database without the schema.
	url, _ := newDB(t)
	for _, cmd := range [][]string{{"status"}, {"dlq", "list"}, {"dlq", "show", "1"}, {"tail"}, {"relay", "--broker", "gochannel://", "--allow-in-process"}} {
		r := cli(t, append(cmd, "--database-url", url)...)
		if r.code != exitError || !strings.Contains(r.stderr, "the eventbus schema is missing") || !strings.Contains(r.stderr, "run `eventbus migrate` first") {
			t.Errorf("%s without the schema: %s", cmd, r)
		}
	}
	if _, err := schema.Lanes(context.Background(), mustPool(t, url)); err == nil {
		t.Error("the failed commands created the schema")
	}

	// A broker URL of an unknown scheme.
	murl, _, _ := migrated(t, 1)
	if r := cli(t, "relay", "--database-url", murl, "--broker", "carrier-pigeon://coop"); r.code != exitError || !strings.Contains(r.stderr, "unknown broker scheme") {
		t.Errorf("relay to an unknown broker: %s", r)
	}
}

func mustPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestDeadLetterPark: `dlq park LANE` moves the relay group past the next
// event it has not acknowledged, into the dead letters, from where `dlq
// replay` sends it back; with clear errors for what cannot be parked.
func TestDeadLetterPark(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 2)
	db := []string{"--database-url", url}
	if r := cli(t, append([]string{"dlq", "park", "x"}, db...)...); r.code != exitUsage || !strings.Contains(r.stderr, `lane "x": want a lane number`) {
		t.Errorf("dlq park x: %s", r)
	}
	if r := cli(t, append([]string{"dlq", "park", "2"}, db...)...); r.code != exitError ||
		r.stderr != "eventbus: park lane 2: unknown lane (the outbox has lanes 0 to 1)\n" {
		t.Errorf("dlq park of an unknown lane: %s", r)
	}
	if r := cli(t, append([]string{"dlq", "park", "0"}, db...)...); r.code != exitError ||
		r.stderr != "eventbus: park lane 0: unknown relay group \"eventbus_relay\": it never relayed the lane\n" {
		t.Errorf("dlq park before any relay ran: %s", r)
	}

	// Relayed events, then two more of one aggregate that no relay took.
	evs := scenario(4)
	publish(t, pool, ob, evs[:2]...)
	relay := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := relay.stop(t); r.code != exitOK {
		t.Fatalf("relay: %s", r)
	}
	stuck := gen.NewPulseCreated(pulses[0], author, "Stuck", t0)
	next := gen.NewPulseCreated(pulses[0], author, "Next", t0)
	publish(t, pool, ob, stuck, next)
	lane := strconv.Itoa(bus.LaneOf(stuck.Envelope().AggregateID, 2))
	if r := cli(t, append([]string{"dlq", "park", lane, "--group", "other"}, db...)...); r.code != exitError ||
		!strings.Contains(r.stderr, `unknown relay group "other"`) {
		t.Errorf("dlq park --group other: %s", r)
	}

	// The rows are visible once every older transaction of the cluster
	// ended (other tests' too), as for the relay.
	var r result
	waitFor(t, "dlq park", func() bool {
		r = cli(t, append([]string{"dlq", "park", lane}, db...)...)
		return r.code != exitError || !strings.Contains(r.stderr, "no unacknowledged event")
	})
	if r.code != exitOK || !strings.Contains(r.stdout, "Parked event "+stuck.Envelope().ID.String()) {
		t.Fatalf("dlq park: %s", r)
	}
	golden(t, "dlq_park.txt", normalize(r.stdout))
	if st := statusJSONOf(t, url); st.Backlog != 1 {
		t.Errorf("backlog after parking one of two events: %d", st.Backlog)
	}
	r = mustCLI(t, append([]string{"dlq", "list", "--json"}, db...)...)
	var list []deadLetterJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("dlq list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 1 || list[0].EventID != stuck.Envelope().ID.String() || list[0].Error != bus.ParkedError || list[0].EventName != stuck.EventName() {
		t.Fatalf("dlq list after parking: %+v", list)
	}

	// --json; then the lane has nothing left.
	r = mustCLI(t, append([]string{"--json", "dlq", "park", lane}, db...)...)
	var parked struct {
		ID      int64  `json:"id"`
		Action  string `json:"action"`
		EventID string `json:"event_id"`
		Group   string `json:"relay_group"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &parked); err != nil || parked.ID != 2 || parked.Action != "parked" ||
		parked.EventID != next.Envelope().ID.String() || parked.Group != bus.ConsumerGroupDefault {
		t.Errorf("dlq park --json: %+v, %v: %s", parked, err, r)
	}
	if r := cli(t, append([]string{"dlq", "park", lane}, db...)...); r.code != exitError ||
		r.stderr != "eventbus: park lane "+lane+": no unacknowledged event in the lane for relay group \"eventbus_relay\"\n" {
		t.Errorf("dlq park of a drained lane: %s", r)
	}

	// Replayed, the event is back in its lane under its id.
	if r := mustCLI(t, append([]string{"dlq", "replay", strconv.FormatInt(list[0].ID, 10)}, db...)...); !strings.Contains(r.stdout, "is back in outbox lane "+lane) {
		t.Errorf("dlq replay: %s", r)
	}
	var copies int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM eventbus_outbox WHERE uuid = $1`, stuck.Envelope().ID.String()).Scan(&copies); err != nil || copies != 2 {
		t.Errorf("outbox rows of the replayed event: %d, %v; want the parked row and the replay", copies, err)
	}
	if st := statusJSONOf(t, url); st.Backlog != 1 {
		t.Errorf("backlog after the replay: %d, want 1", st.Backlog)
	}
}

func TestGroups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, pool, ob := migrated(t, 2)
	db := []string{"--database-url", url}
	if r := mustCLI(t, append([]string{"groups", "list"}, db...)...); r.stdout != "No relay groups registered: no relay has run yet.\n" {
		t.Errorf("groups list before any relay: %s", r)
	}
	evs := scenario(6)
	publish(t, pool, ob, evs...)
	relay := cliBackground(t, "relay", "--database-url", url, "--broker", "gochannel://", "--allow-in-process", "--log-level", "warn")
	waitDrained(t, pool)
	if r := relay.stop(t); r.code != exitOK {
		t.Fatalf("relay: %s", r)
	}
	// A second group, registered before its first relay runs: it has
	// acknowledged nothing.
	if err := bus.RegisterRelayGroup(ctx, pool, "to-kafka"); err != nil {
		t.Fatal(err)
	}

	r := mustCLI(t, append([]string{"groups", "list"}, db...)...)
	golden(t, "groups_list.txt", normalize(r.stdout))
	r = mustCLI(t, append([]string{"groups", "list", "--json"}, db...)...)
	var list []relayGroupJSON
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("groups list --json: %v\n%s", err, r.stdout)
	}
	if len(list) != 2 || list[0].Group != bus.ConsumerGroupDefault || list[0].Backlog != 0 || list[1].Group != "to-kafka" ||
		list[1].Backlog != int64(len(evs)) || list[1].RegisteredAt.IsZero() || list[1].LastSeenAt.IsZero() {
		t.Fatalf("groups list --json: %+v", list)
	}

	r = mustCLI(t, append([]string{"groups", "drop", "to-kafka"}, db...)...)
	if !strings.HasPrefix(r.stdout, `Dropped relay group "to-kafka" (last seen `) {
		t.Errorf("groups drop: %s", r)
	}
	if r := mustCLI(t, append([]string{"groups", "list", "--json"}, db...)...); !strings.Contains(r.stdout, bus.ConsumerGroupDefault) || strings.Contains(r.stdout, "to-kafka") {
		t.Errorf("groups list after the drop: %s", r)
	}
	r = cli(t, append([]string{"groups", "drop", "to-kafka"}, db...)...)
	if r.code != exitError || r.stderr != "eventbus: no relay group \"to-kafka\" (see `eventbus groups list`)\n" {
		t.Errorf("groups drop of an unknown group: %s", r)
	}
	r = mustCLI(t, append([]string{"--json", "groups", "drop", bus.ConsumerGroupDefault}, db...)...)
	if strings.TrimSpace(r.stdout) != "{\n  \"group\": \"eventbus_relay\",\n  \"action\": \"dropped\"\n}" {
		t.Errorf("groups drop --json: %s", r)
	}
	var offsets int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM eventbus_offsets`).Scan(&offsets); err != nil || offsets != 0 {
		t.Errorf("offsets rows after dropping the only group that had some: %d, %v", offsets, err)
	}
	for _, args := range [][]string{{"groups"}, {"groups", "rename"}, {"groups", "drop"}, {"groups", "drop", "a", "b"}} {
		if r := cli(t, append(args, db...)...); r.code != exitUsage {
			t.Errorf("eventbus %s: want a usage error: %s", strings.Join(args, " "), r)
		}
	}
}
