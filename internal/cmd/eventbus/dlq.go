package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/edupulse/eventbus/bus"
)

func (a *app) dlqListFlags(fs *flag.FlagSet) {
	fs.BoolVar(&a.dlqAll, "all", false, "include replayed dead letters")
	fs.IntVar(&a.dlqLimit, "limit", 100, "list at most `N` dead letters")
}

// deadLetterJSON is a dead letter in --json output.
type deadLetterJSON struct {
	ID            int64             `json:"id"`
	Lane          int               `json:"lane"`
	EventID       string            `json:"event_id"`
	EventName     string            `json:"event_name"`
	AggregateID   string            `json:"aggregate_id"`
	Error         string            `json:"error"`
	Attempts      int               `json:"attempts"`
	FirstFailedAt time.Time         `json:"first_failed_at"`
	DeadAt        time.Time         `json:"dead_at"`
	ReplayedAt    *time.Time        `json:"replayed_at"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	// Payload is the stored outbox payload (a forwarder envelope when well
	// formed), as JSON when it is, else as a string.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Event is the event inside the payload, decoded, when it can be.
	Event *tailEvent `json:"event,omitempty"`
}

func toDeadLetterJSON(dl bus.DeadLetter) deadLetterJSON {
	j := deadLetterJSON{ID: dl.ID, Lane: dl.Lane, EventID: dl.MessageUUID, EventName: dl.EventName, AggregateID: dl.AggregateID,
		Error: dl.Error, Attempts: dl.Attempts, FirstFailedAt: dl.FirstFailedAt.UTC(), DeadAt: dl.DeadAt.UTC(), Metadata: dl.Metadata}
	if !dl.ReplayedAt.IsZero() {
		t := dl.ReplayedAt.UTC()
		j.ReplayedAt = &t
	}
	return j
}

// dlqOpen opens the database and the dead-letter API.
func (a *app) dlqOpen(ctx context.Context) (*bus.DeadLetters, func(), error) {
	pool, _, err := a.openMigrated(ctx)
	if err != nil {
		return nil, nil, err
	}
	return bus.NewDeadLetters(pool), pool.Close, nil
}

func (a *app) dlqList(ctx context.Context, _ []string) error {
	if a.dlqLimit <= 0 {
		return usagef("dlq list: --limit %d: want a positive number", a.dlqLimit)
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	list, err := dls.List(ctx, bus.ListOptions{IncludeReplayed: a.dlqAll, Limit: a.dlqLimit})
	if err != nil {
		return err
	}
	if a.jsonOut {
		out := make([]deadLetterJSON, 0, len(list))
		for _, dl := range list {
			out = append(out, toDeadLetterJSON(dl))
		}
		return a.writeJSON(out)
	}
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, "No dead letters.")
		return nil
	}
	header := []string{"ID", "LANE", "EVENT", "EVENT ID", "AGGREGATE", "ATTEMPTS", "DEAD AT", "ERROR"}
	if a.dlqAll {
		header = slices.Insert(header, 7, "REPLAYED AT")
	}
	var rows [][]string
	for _, dl := range list {
		r := []string{strconv.FormatInt(dl.ID, 10), strconv.Itoa(dl.Lane), orDash(dl.EventName), dl.MessageUUID,
			orDash(dl.AggregateID), strconv.Itoa(dl.Attempts), timestamp(dl.DeadAt), truncate(dl.Error, 60)}
		if a.dlqAll {
			r = slices.Insert(r, 7, timestamp(dl.ReplayedAt))
		}
		rows = append(rows, r)
	}
	return table(a.stdout, header, rows)
}

// dlqID parses a dead-letter id argument.
func dlqID(cmd, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("%s: dead-letter id %q: want a positive number (see `eventbus dlq list`)", cmd, s)
	}
	return id, nil
}

// notFound turns bus.ErrDeadLetterNotFound into advice.
func notFound(err error, id int64) error {
	if errors.Is(err, bus.ErrDeadLetterNotFound) {
		return fmt.Errorf("no dead letter with id %d (see `eventbus dlq list --all`)", id)
	}
	return err
}

func (a *app) dlqShow(ctx context.Context, args []string) error {
	id, err := dlqID("dlq show", args[0])
	if err != nil {
		return err
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	dl, err := dls.Get(ctx, id)
	if err != nil {
		return notFound(err, id)
	}
	j := toDeadLetterJSON(dl)
	j.Payload = rawJSON(dl.Payload)
	if topic, msg, err := bus.UnwrapOutboxPayload(dl.Payload); err == nil {
		ev := a.decode(topic, msg)
		ev.Lane = dl.Lane
		j.Event = &ev
	}
	if a.jsonOut {
		return a.writeJSON(j)
	}
	fields := [][]string{
		{"ID:", strconv.FormatInt(dl.ID, 10)},
		{"Lane:", strconv.Itoa(dl.Lane)},
		{"Event ID:", dl.MessageUUID},
		{"Event:", orDash(dl.EventName)},
		{"Aggregate:", orDash(dl.AggregateID)},
		{"Attempts:", strconv.Itoa(dl.Attempts)},
		{"First failed at:", timestamp(dl.FirstFailedAt)},
		{"Dead at:", timestamp(dl.DeadAt)},
		{"Replayed at:", timestamp(dl.ReplayedAt)},
		{"Error:", dl.Error},
	}
	if err := a.keyValues(fields); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "Metadata:")
	keys := make([]string, 0, len(dl.Metadata))
	for k := range dl.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(a.stdout, "  %s: %s\n", k, dl.Metadata[k])
	}
	if j.Event != nil {
		fmt.Fprintln(a.stdout, "Event (decoded from the payload):")
		fmt.Fprintf(a.stdout, "  %s\n", a.formatEvent(*j.Event))
	}
	fmt.Fprintln(a.stdout, "Payload (as stored):")
	fmt.Fprintf(a.stdout, "  %s\n", j.Payload)
	return nil
}

func (a *app) dlqFix(ctx context.Context, args []string) error {
	id, err := dlqID("dlq fix", args[0])
	if err != nil {
		return err
	}
	var payload []byte
	if args[1] == "-" {
		payload, err = io.ReadAll(a.stdin)
	} else {
		payload, err = os.ReadFile(args[1])
	}
	if err != nil {
		return fmt.Errorf("dlq fix: read the payload: %w", err)
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := dls.Fix(ctx, id, payload); err != nil {
		return notFound(err, id)
	}
	return a.done(id, "fixed", fmt.Sprintf("Fixed dead letter %d; replay it with `eventbus dlq replay %d`.", id, id))
}

func (a *app) dlqReplay(ctx context.Context, args []string) error {
	id, err := dlqID("dlq replay", args[0])
	if err != nil {
		return err
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := dls.Replay(ctx, id); err != nil {
		if errors.Is(err, bus.ErrMalformedOutboxRow) {
			return fmt.Errorf("%w (see `eventbus dlq fix`)", err)
		}
		return notFound(err, id)
	}
	dl, err := dls.Get(ctx, id)
	if err != nil {
		return notFound(err, id)
	}
	return a.done(id, "replayed", fmt.Sprintf("Replayed dead letter %d: event %s is back in outbox lane %d.", id, dl.MessageUUID, dl.Lane))
}

func (a *app) dlqDiscard(ctx context.Context, args []string) error {
	id, err := dlqID("dlq discard", args[0])
	if err != nil {
		return err
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	if err := dls.Discard(ctx, id); err != nil {
		return notFound(err, id)
	}
	return a.done(id, "discarded", fmt.Sprintf("Discarded dead letter %d.", id))
}

func (a *app) dlqParkFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.group, "group", bus.ConsumerGroupDefault, "relay consumer `group` whose position moves")
}

func (a *app) dlqPark(ctx context.Context, args []string) error {
	lane, err := strconv.Atoi(args[0])
	if err != nil || lane < 0 {
		return usagef("dlq park: lane %q: want a lane number (see `eventbus status`)", args[0])
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	dl, err := dls.Park(ctx, lane, bus.ParkOptions{Group: a.group})
	if err != nil {
		return err
	}
	if a.jsonOut {
		return a.writeJSON(struct {
			ID      int64  `json:"id"`
			Action  string `json:"action"`
			Lane    int    `json:"lane"`
			EventID string `json:"event_id"`
			Group   string `json:"consumer_group"`
		}{dl.ID, "parked", dl.Lane, dl.MessageUUID, a.group})
	}
	fmt.Fprintf(a.stdout, "Parked event %s (%s) of lane %d as dead letter %d: relay group %s goes on with the next event.\n",
		dl.MessageUUID, orDash(dl.EventName), dl.Lane, dl.ID, a.group)
	fmt.Fprintf(a.stdout, "Replay it with `eventbus dlq replay %d` (after `eventbus dlq fix` if it needs it).\n", dl.ID)
	return nil
}

// done reports a dead-letter action.
func (a *app) done(id int64, action, human string) error {
	if a.jsonOut {
		return a.writeJSON(struct {
			ID     int64  `json:"id"`
			Action string `json:"action"`
		}{id, action})
	}
	fmt.Fprintln(a.stdout, human)
	return nil
}
