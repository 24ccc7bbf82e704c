package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
)

func (a *app) statusFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.group, "group", bus.ConsumerGroupDefault, "relay consumer `group` whose backlog is shown")
}

// statusJSON is the --json output of status.
type statusJSON struct {
	ConsumerGroup string           `json:"consumer_group"`
	Backlog       int64            `json:"backlog"`
	Lanes         []laneStatusJSON `json:"lanes"`
	DeadLetters   int64            `json:"dead_letters"`
	// ConsumerDeadLetters counts the consumers' dead letters stored in
	// PostgreSQL (DeadLetters, the relay's).
	ConsumerDeadLetters int64     `json:"consumer_dead_letters"`
	Inbox               inboxJSON `json:"inbox"`
}

type laneStatusJSON struct {
	Lane                    int     `json:"lane"`
	Backlog                 int64   `json:"backlog"`
	OldestPendingAgeSeconds float64 `json:"oldest_pending_age_seconds"`
	Stored                  int64   `json:"stored"`
	// StoredEstimated tells that Stored is the planner's estimate (see
	// observe.LaneStatus).
	StoredEstimated       bool     `json:"stored_estimated"`
	RelayedOffset         int64    `json:"relayed_offset"`
	LastRelayedAgeSeconds *float64 `json:"last_relayed_age_seconds"`
}

type inboxJSON struct {
	Rows   int64            `json:"rows"`
	Groups []inboxGroupJSON `json:"groups"`
}

type inboxGroupJSON struct {
	ConsumerGroup string `json:"consumer_group"`
	Rows          int64  `json:"rows"`
	// Estimated tells that Rows is the planner's estimate.
	Estimated bool `json:"estimated"`
}

func (a *app) status(ctx context.Context, _ []string) error {
	pool, _, err := a.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := observe.ReadStatus(ctx, pool, a.group)
	if err != nil {
		return a.schemaError(err)
	}
	if a.jsonOut {
		out := statusJSON{ConsumerGroup: st.ConsumerGroup, Backlog: st.Backlog(), DeadLetters: st.DeadLetters, ConsumerDeadLetters: st.ConsumerDeadLetters,
			Lanes: []laneStatusJSON{}, Inbox: inboxJSON{Rows: st.InboxRows(), Groups: []inboxGroupJSON{}}}
		for _, l := range st.Lanes {
			j := laneStatusJSON{Lane: l.Lane, Backlog: l.Backlog, OldestPendingAgeSeconds: l.OldestPending.Seconds(),
				Stored: l.Stored, StoredEstimated: l.StoredEstimated, RelayedOffset: l.RelayedOffset}
			if l.LastRelayedAge >= 0 {
				s := l.LastRelayedAge.Seconds()
				j.LastRelayedAgeSeconds = &s
			}
			out.Lanes = append(out.Lanes, j)
		}
		for _, g := range st.Inbox {
			out.Inbox.Groups = append(out.Inbox.Groups, inboxGroupJSON{g.ConsumerGroup, g.Rows, g.Estimated})
		}
		return a.writeJSON(out)
	}

	var rows [][]string
	var stored int64
	var estimated bool // some count is the planner's estimate
	var oldest = st.Lanes[0].OldestPending
	for _, l := range st.Lanes {
		stored += l.Stored
		estimated = estimated || l.StoredEstimated
		oldest = max(oldest, l.OldestPending)
		pending := "-"
		if l.Backlog > 0 {
			pending = age(l.OldestPending)
		}
		last := "-"
		switch {
		case l.RelayedOffset > 0 && l.LastRelayedAge >= 0:
			last = fmt.Sprintf("%s ago (offset %d)", age(l.LastRelayedAge), l.RelayedOffset)
		case l.RelayedOffset > 0:
			last = fmt.Sprintf("offset %d", l.RelayedOffset)
		}
		rows = append(rows, []string{strconv.Itoa(l.Lane), strconv.FormatInt(l.Backlog, 10), pending, rowCount(l.Stored, l.StoredEstimated), last})
	}
	total := "-"
	if st.Backlog() > 0 {
		total = age(oldest)
	}
	rows = append(rows, []string{"all", strconv.FormatInt(st.Backlog(), 10), total, rowCount(stored, estimated)})
	if err := table(a.stdout, []string{"LANE", "BACKLOG", "OLDEST PENDING", "STORED", "LAST RELAYED"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	var inboxEstimated bool
	for _, g := range st.Inbox {
		inboxEstimated = inboxEstimated || g.Estimated
	}
	summary := [][]string{
		{"Relay consumer group:", st.ConsumerGroup},
		{"Relay dead letters:", deadLetterSummary(st.DeadLetters)},
		{"Consumer dead letters:", deadLetterSummary(st.ConsumerDeadLetters)},
		{"Inbox rows:", rowCount(st.InboxRows(), inboxEstimated)},
	}
	for _, g := range st.Inbox {
		summary = append(summary, []string{"  " + g.ConsumerGroup, rowCount(g.Rows, g.Estimated)})
	}
	if err := a.keyValues(summary); err != nil {
		return err
	}
	if estimated || inboxEstimated {
		fmt.Fprintf(a.stdout, "\n~ marks PostgreSQL's planner estimates, for tables above %d MiB; backlogs are exact.\n", observe.ExactCountMaxBytes>>20)
	}
	return nil
}

// rowCount formats a row count, "~" before an estimate.
func rowCount(n int64, estimated bool) string {
	if estimated {
		return "~" + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10)
}

func deadLetterSummary(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (see `eventbus dlq list`)", n)
}

// keyValues prints "key: value" rows, values aligned.
func (a *app) keyValues(rows [][]string) error {
	if len(rows) == 0 {
		return nil
	}
	return table(a.stdout, rows[0], rows[1:])
}
