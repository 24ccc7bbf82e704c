package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/gen"
)

// report is the end-of-run summary and consistency check.
type report struct {
	elapsed     time.Duration
	kinds       []kindRow
	inboxDups   int64
	deliverDups int
	deadLetters int64
	consumerDLQ int64
	// correct of answers, as the badges consumer counted them from
	// PulseAnswered version 2 (version 1 upcast as correct)
	correct, answers int
	p50, p99         time.Duration
	problems         []string
	// interrupted says the run stopped on an interrupt: the check covers
	// what committed before it.
	interrupted bool
	// foreign counts the events of earlier runs the notifications consumer
	// handled (relayed late); the check leaves them out.
	foreign int
}

type kindRow struct {
	name               string
	inOutbox, consumed int
}

func buildReport(ctx context.Context, pool *pgxpool.Pool, cfg config, stats *runStats,
	badges, notifications *bus.Consumer, elapsed time.Duration) (*report, error) {
	r := &report{elapsed: elapsed}
	problem := func(format string, args ...any) { r.problems = append(r.problems, fmt.Sprintf(format, args...)) }

	// This run's scope: earlier runs' rows on the same database are left
	// out.
	students, aggregates := stats.scope()
	stats.mu.Lock()
	defer stats.mu.Unlock()
	r.foreign = stats.foreign

	// Events per kind: stored in the outbox (committed) vs consumed by the
	// notifications consumer (distinct events).
	outboxByName := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT metadata->>'event_name', metadata->>'event_version', count(*) FROM eventbus_outbox
		WHERE metadata->>'aggregate_id' = ANY($1) GROUP BY 1, 2`, aggregates)
	if err != nil {
		return nil, fmt.Errorf("count the outbox: %w", err)
	}
	for rows.Next() {
		var name, version string
		var n int
		if err := rows.Scan(&name, &version, &n); err != nil {
			return nil, err
		}
		if version != "1" {
			name += "@v" + version // as gen.Kind's String
		}
		outboxByName[name] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, k := range gen.AllKinds() {
		name := k.String()
		row := kindRow{name: name, inOutbox: outboxByName[name], consumed: stats.byKind[name]}
		r.kinds = append(r.kinds, row)
		if row.consumed != row.inOutbox {
			problem("%s: %d committed, %d consumed", name, row.inOutbox, row.consumed)
		}
	}
	for id := range stats.committedAt {
		if stats.seen[id] == 0 {
			problem("event %s committed but never consumed", id)
			break
		}
	}
	for _, n := range stats.seen {
		r.deliverDups += n - 1
	}
	r.inboxDups = badges.Stats().Duplicates
	r.consumerDLQ = badges.Stats().DeadLettered + notifications.Stats().DeadLettered
	if r.consumerDLQ > 0 {
		problem("%d messages dead-lettered by consumers", r.consumerDLQ)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM eventbus_dead_letters WHERE replayed_at IS NULL AND aggregate_id = ANY($1)",
		aggregates).Scan(&r.deadLetters); err != nil {
		return nil, fmt.Errorf("count the dead letters: %w", err)
	}
	if r.deadLetters > 0 {
		problem("%d events dead-lettered by the relay", r.deadLetters)
	}

	// Exactly-once effect: every answer counted once, a badge per
	// badge-every answers, one inbox row per PulseAnswered. The correct
	// answers the badges consumer counted from PulseAnswered version 2's
	// Correct match the table's, version 1 events (upcast as correct)
	// included.
	var answers, counted, inbox, badgeRows, wantBadges, wrongStudents, correct, countedCorrect int
	err = pool.QueryRow(ctx, `
		WITH run_answers AS (SELECT * FROM answers WHERE student_id = ANY($2)),
		run_progress AS (SELECT * FROM student_progress WHERE student_id = ANY($2)),
		run_badges AS (SELECT * FROM badges WHERE student_id = ANY($2)),
		per_student AS (
			SELECT a.student_id, count(*) AS answers, coalesce(max(p.answers), 0) AS counted,
			       count(*) FILTER (WHERE a.correct) AS correct, coalesce(max(p.correct), 0) AS counted_correct,
			       (SELECT count(*) FROM run_badges b WHERE b.student_id = a.student_id) AS badges
			FROM run_answers a LEFT JOIN run_progress p USING (student_id)
			GROUP BY a.student_id)
		SELECT (SELECT count(*) FROM run_answers),
		       (SELECT coalesce(sum(answers), 0) FROM run_progress),
		       (SELECT count(*) FROM eventbus_inbox WHERE consumer_group = 'badges' AND event_id::text IN (
		            SELECT uuid FROM eventbus_outbox WHERE metadata->>'aggregate_id' = ANY($3) AND metadata->>'event_name' = 'edupulse.pulse.answered')),
		       (SELECT count(*) FROM run_badges),
		       coalesce((SELECT sum(answers / $1) FROM per_student), 0),
		       (SELECT count(*) FROM per_student WHERE counted <> answers OR badges <> answers / $1 OR counted_correct <> correct),
		       (SELECT count(*) FROM run_answers WHERE correct),
		       (SELECT coalesce(sum(correct), 0) FROM run_progress)`,
		cfg.BadgeEvery, students, aggregates).Scan(&answers, &counted, &inbox, &badgeRows, &wantBadges, &wrongStudents, &correct, &countedCorrect)
	if err != nil {
		return nil, fmt.Errorf("check the database: %w", err)
	}
	r.correct, r.answers = countedCorrect, counted
	if counted != answers {
		problem("badges consumer counted %d answers, the answers table has %d", counted, answers)
	}
	if countedCorrect != correct {
		problem("badges consumer counted %d correct answers, the answers table has %d", countedCorrect, correct)
	}
	if inbox != answers {
		problem("badges inbox holds %d events, want one per answer (%d)", inbox, answers)
	}
	if badgeRows != wantBadges || wrongStudents > 0 {
		problem("%d badges awarded, want %d (%d students off)", badgeRows, wantBadges, wrongStudents)
	}
	if n := outboxByName[gen.BadgeAwarded{}.EventName()]; n != badgeRows {
		problem("%d BadgeAwarded events for %d badge rows", n, badgeRows)
	}

	lat := slices.Clone(stats.latencies)
	slices.Sort(lat)
	r.p50, r.p99 = percentile(lat, 50), percentile(lat, 99)
	return r, nil
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nEduPulse run: %s\n\n", r.elapsed.Round(time.Millisecond))
	if r.interrupted {
		fmt.Fprintf(w, "Interrupted: the producers stopped early; the figures and the check cover what committed before.\n\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "event\tcommitted\tconsumed\t")
	var totalIn, totalOut int
	for _, k := range r.kinds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k.name, k.inOutbox, k.consumed)
		totalIn += k.inOutbox
		totalOut += k.consumed
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t\n", totalIn, totalOut)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "correct answers (v1 upcast as correct)\t%d of %d\n", r.correct, r.answers)
	fmt.Fprintf(tw, "duplicates skipped by the inbox\t%d\n", r.inboxDups)
	fmt.Fprintf(tw, "redeliveries seen by notifications\t%d\n", r.deliverDups)
	fmt.Fprintf(tw, "dead letters (relay / consumers)\t%d / %d\n", r.deadLetters, r.consumerDLQ)
	fmt.Fprintf(tw, "commit-to-consume latency p50 / p99\t%s / %s\n", r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
	if r.foreign > 0 {
		fmt.Fprintf(tw, "events of earlier runs relayed now (not checked)\t%d\n", r.foreign)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if len(r.problems) == 0 {
		fmt.Fprintln(w, "consistency check: OK (every committed event consumed once in effect, badges and correct answers match answers)")
		return
	}
	fmt.Fprintln(w, "consistency check: FAILED")
	for _, p := range r.problems {
		fmt.Fprintln(w, "  -", p)
	}
}
