package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/edupulse/eventbus/schema"
)

func (a *app) migrateFlags(fs *flag.FlagSet) {
	fs.IntVar(&a.lanes, "lanes", 0, fmt.Sprintf("number of outbox `lanes`; lanes can be added, never removed (default: keep the current number, %d on a new database)", schema.LanesDefault))
}

func (a *app) migrate(ctx context.Context, _ []string) error {
	if a.lanes < 0 || a.lanes > schema.LanesMax {
		return usagef("migrate: --lanes %d out of range 1..%d", a.lanes, schema.LanesMax)
	}
	pool, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := schema.Migrate(ctx, pool, schema.Options{Lanes: a.lanes})
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
