package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/observe"
)

func (a *app) statusFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.group, "relay-group", bus.ConsumerGroupDefault, "relay `group` whose backlog is shown (as relay's --relay-group)")
	fs.StringVar(&a.consumerGroup, "consumer-group", "", "show the inbox rows and dead letters of this consumer `group` only (default: all)")
	a.deprecatedGroupFlag(fs, "relay-group", &a.group)
}

// statusJSON is the --json output of status.
type statusJSON struct {
	// RelayGroup is the relay group whose backlog is shown.
	RelayGroup  string           `json:"relay_group"`
	Backlog     int64            `json:"backlog"`
	Lanes       []laneStatusJSON `json:"lanes"`
	DeadLetters int64            `json:"dead_letters"`
	// ConsumerDeadLetters counts the consumers' dead letters stored in
	// PostgreSQL (DeadLetters, the relay's): of --consumer-group only when
	// given.
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
	StoredEstimated bool `json:"stored_estimated"`
	// RelayedOffset is the offset of the last event the relay group
	// acknowledged on the lane.
	RelayedOffset int64 `json:"relayed_offset"`
	// LastRelayedEventAgeSeconds is the age of that event: how long ago it
	// was written to the outbox, not when it was relayed (which is not
	// recorded). Null when it is not stored any more.
	LastRelayedEventAgeSeconds *float64 `json:"last_relayed_event_age_seconds"`
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
	if a.consumerGroup != "" {
		st.Inbox = slices.DeleteFunc(st.Inbox, func(g observe.InboxStatus) bool { return g.ConsumerGroup != a.consumerGroup })
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM eventbus_consumer_dead_letters WHERE consumer_group = $1 AND replayed_at IS NULL`,
			a.consumerGroup).Scan(&st.ConsumerDeadLetters); err != nil {
			return fmt.Errorf("count the dead letters of consumer group %s: %w", a.consumerGroup, err)
		}
	}
	if a.jsonOut {
		out := statusJSON{RelayGroup: st.ConsumerGroup, Backlog: st.Backlog(), DeadLetters: st.DeadLetters, ConsumerDeadLetters: st.ConsumerDeadLetters,
			Lanes: []laneStatusJSON{}, Inbox: inboxJSON{Rows: st.InboxRows(), Groups: []inboxGroupJSON{}}}
		for _, l := range st.Lanes {
			j := laneStatusJSON{Lane: l.Lane, Backlog: l.Backlog, OldestPendingAgeSeconds: l.OldestPending.Seconds(),
				Stored: l.Stored, StoredEstimated: l.StoredEstimated, RelayedOffset: l.RelayedOffset}
			if l.LastRelayedAge >= 0 {
				s := l.LastRelayedAge.Seconds()
				j.LastRelayedEventAgeSeconds = &s
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
			last = fmt.Sprintf("offset %d, written %s ago", l.RelayedOffset, age(l.LastRelayedAge))
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
	if err := table(a.stdout, []string{"LANE", "BACKLOG", "OLDEST PENDING", "STORED", "LAST RELAYED EVENT"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout)
	var inboxEstimated bool
	for _, g := range st.Inbox {
		inboxEstimated = inboxEstimated || g.Estimated
	}
	summary := [][]string{
		{"Relay group:", st.ConsumerGroup},
		{"Relay dead letters:", deadLetterSummary(st.DeadLetters)},
		{"Consumer dead letters:", deadLetterSummary(st.ConsumerDeadLetters)},
		{"Inbox rows:", rowCount(st.InboxRows(), inboxEstimated)},
	}
	if a.consumerGroup != "" {
		summary[2][0] = "Consumer dead letters of " + a.consumerGroup + ":"
		summary[3][0] = "Inbox rows of " + a.consumerGroup + ":"
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
