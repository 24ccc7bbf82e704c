package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/edupulse/eventbus/schema"
)

func (a *app) migrateFlags(fs *flag.FlagSet) {
	fs.IntVar(&a.lanes, "lanes", 0, fmt.Sprintf("number of outbox `lanes`; lanes can be added, never removed (default: keep the current number, %d on a new database)", schema.LanesDefault))
	fs.BoolVar(&a.printSQL, "print-sql", false, "print the schema as plain SQL instead of applying it (connects to nothing)")
	fs.IntVar(&a.sqlAfter, "after", 0, "with --print-sql: leave out the migrations up to this `version` (the one the database has)")
	fs.StringVar(&a.wakeup, "wakeup", "", "how relays learn of new events: `notify` (a trigger sends NOTIFY on commit) or poll (cheaper for producers, latency up to the poll interval); default: keep the current setting, notify on a new database")
}

func (a *app) migrate(ctx context.Context, _ []string) error {
	if a.lanes < 0 || a.lanes > schema.LanesMax {
		return usagef("migrate: --lanes %d out of range 1..%d", a.lanes, schema.LanesMax)
	}
	wakeup := schema.WakeupUnchanged
	switch a.wakeup {
	case "":
	case "notify":
		wakeup = schema.WakeupNotify
	case "poll":
		wakeup = schema.WakeupPoll
	default:
		return usagef("migrate: --wakeup %q: want notify or poll", a.wakeup)
	}
	if a.printSQL {
		if a.sqlAfter < 0 {
			return usagef("migrate: --after %d: want a migration version", a.sqlAfter)
		}
		if wakeup == schema.WakeupUnchanged {
			wakeup = schema.WakeupNotify
		}
		script, err := schema.SQL(schema.SQLOptions{Lanes: a.lanes, Wakeup: wakeup, After: a.sqlAfter})
		if err != nil {
			return err
		}
		_, err = io.WriteString(a.stdout, script)
		return err
	}
	if a.sqlAfter != 0 {
		return usagef("migrate: --after goes with --print-sql")
	}
	pool, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := schema.Migrate(ctx, pool, schema.Options{Lanes: a.lanes, Wakeup: wakeup})
	if err != nil {
		return err
	}
	if a.jsonOut {
		applied := res.Applied
		if applied == nil {
			applied = []int{}
		}
		return a.writeJSON(struct {
			Applied []int `json:"applied"`
			Lanes   int   `json:"lanes"`
		}{applied, res.Lanes})
	}
	if len(res.Applied) == 0 {
		fmt.Fprintf(a.stdout, "Schema up to date; %d lanes.\n", res.Lanes)
		return nil
	}
	versions := make([]string, len(res.Applied))
	for i, v := range res.Applied {
		versions[i] = fmt.Sprintf("%03d", v)
	}
	fmt.Fprintf(a.stdout, "Applied migration %s; %d lanes.\n", strings.Join(versions, ", "), res.Lanes)
	return nil
}
