package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

func (a *app) dlqListFlags(fs *flag.FlagSet) {
	fs.BoolVar(&a.dlqAll, "all", false, "include replayed dead letters")
	fs.IntVar(&a.dlqLimit, "limit", 100, "list at most `N` dead letters")
	fs.StringVar(&a.dlqKind, "kind", "", "list one `kind` only: relay or consumer (default: both)")
	fs.StringVar(&a.group, "consumer-group", "", "list the dead letters of one consumer `group` only (implies --kind consumer)")
	a.deprecatedGroupFlag(fs, "consumer-group", &a.group)
}

// deadLetterJSON is a dead letter of either kind in --json output.
type deadLetterJSON struct {
	ID int64 `json:"id"`
	// Kind is "relay" (an outbox event the relay could never publish) or
	// "consumer" (a message a consumer gave up on).
	Kind string `json:"kind"`
	// Lane is the outbox lane of a relay dead letter.
	Lane *int `json:"lane,omitempty"`
	// ConsumerGroup and Topic are the group and the broker topic of a
	// consumer dead letter.
	ConsumerGroup string `json:"consumer_group,omitempty"`
	Topic         string `json:"topic,omitempty"`
	EventID       string `json:"event_id"`
	EventName     string `json:"event_name"`
	EventVersion  int    `json:"event_version,omitempty"`
	AggregateID   string `json:"aggregate_id"`
	// Error is why the relay's last attempt failed, or why the consumer
	// gave up.
	Error         string    `json:"error"`
	Attempts      int       `json:"attempts"`
	FirstFailedAt time.Time `json:"first_failed_at"`
	// DeadAt is when the event was dead-lettered: for a consumer dead
	// letter, its last failure.
	DeadAt     time.Time         `json:"dead_at"`
	ReplayedAt *time.Time        `json:"replayed_at"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// Payload is the stored payload, as JSON when it is, else as a string:
	// for a relay dead letter the outbox payload (a forwarder envelope when
	// well formed), for a consumer dead letter the message's payload (the
	// event's JSON).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Event is the event inside the payload, decoded, when it can be.
	Event *tailEvent `json:"event,omitempty"`
}

func toDeadLetterJSON(dl bus.DeadLetter) deadLetterJSON {
	lane := dl.Lane
	j := deadLetterJSON{ID: dl.ID, Kind: string(bus.DeadLetterKindRelay), Lane: &lane, EventID: dl.MessageUUID, EventName: dl.EventName,
		AggregateID: dl.AggregateID, Error: dl.Error, Attempts: dl.Attempts, FirstFailedAt: dl.FirstFailedAt.UTC(),
		DeadAt: dl.DeadAt.UTC(), Metadata: dl.Metadata, ReplayedAt: utcOrNil(dl.ReplayedAt)}
	return j
}

func consumerDeadLetterJSON(dl bus.ConsumerDeadLetter) deadLetterJSON {
	return deadLetterJSON{ID: dl.ID, Kind: string(bus.DeadLetterKindConsumer), ConsumerGroup: dl.Group, Topic: dl.Topic,
		EventID: dl.MessageUUID, EventName: dl.EventName, EventVersion: dl.EventVersion, AggregateID: dl.AggregateID,
		Error: dl.Reason, Attempts: dl.Attempts, FirstFailedAt: dl.FirstFailedAt.UTC(), DeadAt: dl.LastFailedAt.UTC(),
		Metadata: dl.Metadata, ReplayedAt: utcOrNil(dl.ReplayedAt)}
}

func utcOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
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
	if a.group != "" && a.dlqKind == "" {
		a.dlqKind = string(bus.DeadLetterKindConsumer)
	}
	switch bus.DeadLetterKind(a.dlqKind) {
	case "", bus.DeadLetterKindRelay, bus.DeadLetterKindConsumer:
	default:
		return usagef("dlq list: --kind %q: want relay or consumer", a.dlqKind)
	}
	if a.group != "" && a.dlqKind != string(bus.DeadLetterKindConsumer) {
		return usagef("dlq list: --consumer-group lists consumer dead letters: it does not go with --kind %s", a.dlqKind)
	}
	dls, closeDB, err := a.dlqOpen(ctx)
	if err != nil {
		return err
	}
	defer closeDB()
	var list []deadLetterJSON
	if a.dlqKind != string(bus.DeadLetterKindConsumer) {
		relay, err := dls.List(ctx, bus.ListOptions{IncludeReplayed: a.dlqAll, Limit: a.dlqLimit})
		if err != nil {
			return err
		}
		for _, dl := range relay {
			list = append(list, toDeadLetterJSON(dl))
		}
	}
	if a.dlqKind != string(bus.DeadLetterKindRelay) {
		consumer, err := dls.ListConsumer(ctx, bus.ConsumerListOptions{Group: a.group, IncludeReplayed: a.dlqAll, Limit: a.dlqLimit})
		if err != nil {
			return err
		}
		for _, dl := range consumer {
			list = append(list, consumerDeadLetterJSON(dl))
		}
	}
	// Ids of both kinds come from one sequence: in id order, the oldest
	// first.
	slices.SortFunc(list, func(x, y deadLetterJSON) int { return cmp.Compare(x.ID, y.ID) })
	list = list[:min(len(list), a.dlqLimit)]
	if a.jsonOut {
		if list == nil {
			list = []deadLetterJSON{}
		}
		return a.writeJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, "No dead letters.")
		return nil
	}
	header := []string{"ID", "KIND", "FROM", "EVENT", "EVENT ID", "AGGREGATE", "ATTEMPTS", "DEAD AT", "ERROR"}
	if a.dlqAll {
		header = slices.Insert(header, 8, "REPLAYED AT")
	}
	var rows [][]string
	for _, dl := range list {
		from := dl.ConsumerGroup
		if dl.Lane != nil {
			from = "lane " + strconv.Itoa(*dl.Lane)
		}
		r := []string{strconv.FormatInt(dl.ID, 10), dl.Kind, from, orDash(dl.EventName), dl.EventID,
			orDash(dl.AggregateID), strconv.Itoa(dl.Attempts), timestamp(dl.DeadAt), truncate(shortReason(dl), 60)}
		if a.dlqAll {
			var replayed time.Time
			if dl.ReplayedAt != nil {
				replayed = *dl.ReplayedAt
			}
			r = slices.Insert(r, 8, timestamp(replayed))
		}
		rows = append(rows, r)
	}
	return table(a.stdout, header, rows)
}

// shortReason is a dead letter's error without what the table's other
// columns say: a consumer's reasons start with the event's name and id
// ("handle NAME ID: ...", "decode event ID (name ..., version N): ...").
func shortReason(dl deadLetterJSON) string {
	if dl.Kind != string(bus.DeadLetterKindConsumer) {
		return dl.Error
	}
	reason := strings.TrimPrefix(dl.Error, "handle "+dl.EventName+" "+dl.EventID+": ")
	if rest, ok := strings.CutPrefix(reason, "decode event "+dl.EventID+" ("); ok {
		if _, after, found := strings.Cut(rest, "): "); found {
			reason = after
		}
	}
	return reason
}

// dlqKindOf tells which kind of dead letter id is.
func dlqKindOf(ctx context.Context, dls *bus.DeadLetters, id int64) (bus.DeadLetterKind, error) {
	kind, err := dls.Kind(ctx, id)
	if err != nil {
		return "", notFound(err, id)
	}
	return kind, nil
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
	kind, err := dlqKindOf(ctx, dls, id)
	if err != nil {
		return err
	}
	var j deadLetterJSON
	var fields [][]string
	if kind == bus.DeadLetterKindConsumer {
		dl, err := dls.GetConsumer(ctx, id)
		if err != nil {
			return notFound(err, id)
		}
		j = consumerDeadLetterJSON(dl)
		j.Payload = rawJSON(dl.Payload)
		msg := message.NewMessage(dl.MessageUUID, dl.Payload)
		for k, v := range dl.Metadata {
			msg.Metadata[k] = v
		}
		ev := a.decode(dl.Topic, msg)
		j.Event = &ev
		version := "-"
		if dl.EventVersion > 0 {
			version = strconv.Itoa(dl.EventVersion)
		}
		fields = [][]string{
			{"ID:", strconv.FormatInt(dl.ID, 10)},
			{"Kind:", "consumer (a message the consumer gave up on)"},
			{"Consumer group:", dl.Group},
			{"Topic:", dl.Topic},
			{"Event ID:", dl.MessageUUID},
			{"Event:", orDash(dl.EventName)},
			{"Version:", version},
			{"Aggregate:", orDash(dl.AggregateID)},
			{"Attempts:", strconv.Itoa(dl.Attempts)},
			{"First failed at:", timestamp(dl.FirstFailedAt)},
			{"Last failed at:", timestamp(dl.LastFailedAt)},
			{"Replayed at:", timestamp(dl.ReplayedAt)},
			{"Reason:", dl.Reason},
		}
	} else {
		dl, err := dls.Get(ctx, id)
		if err != nil {
			return notFound(err, id)
		}
		j = toDeadLetterJSON(dl)
		j.Payload = rawJSON(dl.Payload)
		if topic, msg, err := bus.UnwrapOutboxPayload(dl.Payload); err == nil {
			ev := a.decode(topic, msg)
			ev.Lane = dl.Lane
			j.Event = &ev
		}
		fields = [][]string{
			{"ID:", strconv.FormatInt(dl.ID, 10)},
			{"Kind:", "relay (an outbox event the relay could not publish)"},
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
	}
	if a.jsonOut {
		return a.writeJSON(j)
	}
	if err := a.keyValues(fields); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "Metadata:")
	keys := make([]string, 0, len(j.Metadata))
	for k := range j.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(a.stdout, "  %s: %s\n", k, j.Metadata[k])
	}
	if j.Event != nil && (j.Event.Error == "" || kind == bus.DeadLetterKindRelay) {
		line := a.formatEvent(*j.Event)
		if kind == bus.DeadLetterKindConsumer {
			// A consumer's message comes from a topic, not an outbox lane.
			line = strings.Replace(line, fmt.Sprintf(" lane=%d ", j.Event.Lane), " topic="+j.Topic+" ", 1)
		}
		fmt.Fprintln(a.stdout, "Event (decoded from the payload):")
		fmt.Fprintf(a.stdout, "  %s\n", line)
	} else if j.Event != nil {
		fmt.Fprintf(a.stdout, "Event: does not decode: %s\n", j.Event.Error)
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
	kind, err := dlqKindOf(ctx, dls, id)
	if err != nil {
		return err
	}
	if kind == bus.DeadLetterKindConsumer {
		err = dls.FixConsumer(ctx, id, payload)
	} else {
		err = dls.Fix(ctx, id, payload)
	}
	if err != nil {
		return notFound(err, id)
	}
	return a.done(id, "fixed", fmt.Sprintf("Fixed dead letter %d; replay it with `eventbus dlq replay %d`.", id, id))
}

func (a *app) dlqReplayFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.relayOpts.brokerURL, "broker", "", "broker `URL` to publish a consumer dead letter to (default $"+broker.EnvBroker+")")
	fs.BoolVar(&a.relayOpts.allowInProcess, "allow-in-process", false, "allow an in-process broker (gochannel://): the dead letter is marked replayed and dropped")
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
	kind, err := dlqKindOf(ctx, dls, id)
	if err != nil {
		return err
	}
	if kind == bus.DeadLetterKindConsumer {
		return a.dlqReplayConsumer(ctx, dls, id)
	}
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

// dlqReplayConsumer publishes a consumer dead letter to its topic again.
func (a *app) dlqReplayConsumer(ctx context.Context, dls *bus.DeadLetters, id int64) error {
	url := cmp.Or(a.relayOpts.brokerURL, a.getenv(broker.EnvBroker))
	if url == "" {
		return usagef("dlq replay: dead letter %d is a consumer's: it goes back to its broker topic; pass --broker or set %s", id, broker.EnvBroker)
	}
	if _, err := checkInProcess("dlq replay", url, a.relayOpts.allowInProcess); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := broker.Open(ctx, url, broker.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer b.Close()
	if err := dls.ReplayConsumer(ctx, id, b.Publisher()); err != nil {
		return notFound(err, id)
	}
	dl, err := dls.GetConsumer(ctx, id)
	if err != nil {
		return notFound(err, id)
	}
	return a.done(id, "replayed", fmt.Sprintf("Replayed dead letter %d: event %s is back on topic %s, for consumer group %s "+
		"(other groups subscribed to the topic receive it again too; an OnTx handler's inbox skips it).", id, dl.MessageUUID, dl.Topic, dl.Group))
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
	kind, err := dlqKindOf(ctx, dls, id)
	if err != nil {
		return err
	}
	if kind == bus.DeadLetterKindConsumer {
		err = dls.DiscardConsumer(ctx, id)
	} else {
		err = dls.Discard(ctx, id)
	}
	if err != nil {
		return notFound(err, id)
	}
	return a.done(id, "discarded", fmt.Sprintf("Discarded dead letter %d.", id))
}

func (a *app) dlqParkFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.group, "relay-group", bus.ConsumerGroupDefault, "relay `group` whose position moves")
	a.deprecatedGroupFlag(fs, "relay-group", &a.group)
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
			Group   string `json:"relay_group"`
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
