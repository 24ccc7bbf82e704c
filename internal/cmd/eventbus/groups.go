package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edupulse/eventbus/bus"
)

// relayGroupJSON is a relay group in --json output.
type relayGroupJSON struct {
	Group        string    `json:"group"`
	RegisteredAt time.Time `json:"registered_at"`
	LastSeenAt   time.Time `json:"last_seen_at"`
	Backlog      int64     `json:"backlog"`
}

func (a *app) groupsList(ctx context.Context, _ []string) error {
	pool, _, err := a.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	groups, err := bus.ListRelayGroups(ctx, pool)
	if err != nil {
		return err
	}
	if a.jsonOut {
		out := make([]relayGroupJSON, 0, len(groups))
		for _, g := range groups {
			out = append(out, relayGroupJSON{Group: g.Name, RegisteredAt: g.RegisteredAt.UTC(), LastSeenAt: g.LastSeenAt.UTC(), Backlog: g.Backlog})
		}
		return a.writeJSON(out)
	}
	if len(groups) == 0 {
		fmt.Fprintln(a.stdout, "No relay groups registered: no relay has run yet.")
		return nil
	}
	var rows [][]string
	for _, g := range groups {
		rows = append(rows, []string{g.Name, timestamp(g.RegisteredAt), timestamp(g.LastSeenAt), strconv.FormatInt(g.Backlog, 10)})
	}
	return table(a.stdout, []string{"GROUP", "REGISTERED", "LAST SEEN", "BACKLOG"}, rows)
}

func (a *app) groupsDrop(ctx context.Context, args []string) error {
	group := args[0]
	pool, _, err := a.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	lastSeen, err := bus.DropRelayGroup(ctx, pool, group)
	if errors.Is(err, bus.ErrRelayGroupNotFound) {
		return fmt.Errorf("no relay group %q (see `eventbus groups list`)", group)
	}
	if err != nil {
		return err
	}
	if a.jsonOut {
		return a.writeJSON(struct {
			Group  string `json:"group"`
			Action string `json:"action"`
		}{group, "dropped"})
	}
	fmt.Fprintf(a.stdout, "Dropped relay group %q (last seen %s): its offsets are deleted, and the cleaner no longer keeps outbox rows for it.\n"+
		"A relay of the group that is still running registers it again.\n", group, timestamp(lastSeen))
	return nil
}
