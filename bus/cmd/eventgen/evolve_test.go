package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The notes module: version 1 of notes.note.added, and a command storing
// one such event in the outbox.
const notesV1 = `// Package domain declares the notes events.
package domain

` + goGenerate + ` go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../notegen

// NoteAdded: a note was added.
//
//eventbus:event name=notes.note.added aggregate=ID
type NoteAdded struct {
	ID   string ` + "`json:\"id\"`" + `
	Text string ` + "`json:\"text\"`" + `
}
`

const notesStore = `// Command store publishes one NoteAdded version 1 through the outbox.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/schema"

	"example.com/notes/notegen"
)

func main() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("NOTES_DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	if _, err := schema.Migrate(ctx, pool, schema.Options{}); err != nil {
		panic(err)
	}
	outbox, err := bus.NewOutbox(ctx, pool, bus.OutboxConfig{Registry: notegen.Registry()})
	if err != nil {
		panic(err)
	}
	ev := notegen.NewNoteAdded("n-1", "upcasters keep old events alive")
	err = outbox.InTx(ctx, pool, func(ctx context.Context, tx pgx.Tx) ([]bus.Event, error) {
		return []bus.Event{ev}, nil
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("stored %s version %d %s\n", ev.EventName(), ev.EventVersion(), ev.Envelope().ID)
}
`

// The evolved declaration: version 1 renamed NoteAddedV1 (the wire name is
// what stays), version 2 with a word count and the upcaster.
const notesV2 = `// Package domain declares the notes events.
package domain

import "strings"

` + goGenerate + ` go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../notegen

// NoteAddedV1: a note was added (version 1).
//
//eventbus:event name=notes.note.added aggregate=ID
type NoteAddedV1 struct {
	ID   string ` + "`json:\"id\"`" + `
	Text string ` + "`json:\"text\"`" + `
}

// NoteAdded: a note was added, with its word count.
//
//eventbus:event name=notes.note.added version=2 aggregate=ID
type NoteAdded struct {
	ID    string ` + "`json:\"id\"`" + `
	Text  string ` + "`json:\"text\"`" + `
	Words int    ` + "`json:\"words\"`" + `
}

// UpcastNoteAdded counts the words of a version 1 note.
//
//eventbus:upcast
func UpcastNoteAdded(v1 NoteAddedV1) NoteAdded {
	return NoteAdded{ID: v1.ID, Text: v1.Text, Words: len(strings.Fields(v1.Text))}
}
`

const notesConsume = `// Command consume relays the outbox to an in-process broker and handles
// the notes of the latest version only, until it has received one.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
	_ "github.com/edupulse/eventbus/bus/broker/gochannelbroker"

	"example.com/notes/notegen"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("NOTES_DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	b, err := broker.Open(ctx, "gochannel://", broker.Options{})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	sub, err := b.Subscriber("notes")
	if err != nil {
		panic(err)
	}
	c, err := bus.NewConsumer(bus.ConsumerConfig{Registry: notegen.Registry(), Subscriber: sub, Group: "notes", DeadLetter: b.Publisher()})
	if err != nil {
		panic(err)
	}
	got := make(chan notegen.NoteAdded, 1)
	if err := bus.On(c, func(_ context.Context, e notegen.NoteAdded) error {
		select {
		case got <- e:
		default:
		}
		return nil
	}); err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()
	<-c.Running()
	relay, err := bus.NewRelay(bus.RelayConfig{Pool: pool, Publisher: b.Publisher(), PollInterval: 100 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	go func() { _ = relay.Run(runCtx) }()
	select {
	case e := <-got:
		fmt.Printf("received %s version %d %s: text=%q words=%d\n", e.EventName(), e.EventVersion(), e.Envelope().ID, e.Text, e.Words)
	case <-ctx.Done():
		fmt.Println("nothing received; dead-lettered:", c.Stats().DeadLettered)
		os.Exit(1)
	}
}
`

// TestModuleEvolution evolves an event in another module (issue 11): the
// module publishes version 1 into the outbox; its declaration then gains
// version 2 with an upcaster (go generate accepts it: adding a version is
// compatible, and Kind numbers stay); a consumer on the new code, handling
// version 2 only, receives the stored version 1 event as version 2, with
// its id.
func TestModuleEvolution(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a temporary module")
	}
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	dir := newModule(t, "example.com/notes", map[string]string{
		"domain/domain.go": notesV1,
		"store/main.go":    notesStore,
	})
	env := []string{"NOTES_DATABASE_URL=" + dbURL}
	run := func(args ...string) string {
		t.Helper()
		out, err := goCmdEnv(t, dir, env, args...)
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	mustGo(t, dir, "generate", "./...")
	out := run("run", "./store")
	stored := regexp.MustCompile(`stored notes.note.added version 1 ([0-9a-f-]{36})`).FindStringSubmatch(out)
	if stored == nil {
		t.Fatalf("store printed %q", out)
	}
	lockV1 := readLock(t, filepath.Join(dir, "domain", lockFileDefault))

	// The new code: the old producer is gone, the declaration evolves.
	if err := os.RemoveAll(filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "domain", "domain.go"), notesV2)
	writeTestFile(t, filepath.Join(dir, "consume", "main.go"), notesConsume)
	mustGo(t, dir, "generate", "./...")
	lockV2 := readLock(t, filepath.Join(dir, "domain", lockFileDefault))
	if len(lockV1.Events) != 1 || len(lockV2.Events) != 2 || lockV2.Events[0].Kind != lockV1.Events[0].Kind || lockV2.Events[1].Kind != 2 {
		t.Errorf("locks: version 1 had %+v, version 2 has %+v; want version 1 to keep Kind 1 and version 2 to get Kind 2", lockV1.Events, lockV2.Events)
	}
	out = run("run", "./consume")
	want := "received notes.note.added version 2 " + stored[1] + `: text="upcasters keep old events alive" words=5`
	if !strings.Contains(out, want) {
		t.Fatalf("consume printed:\n%s\nwant the stored event upcast:\n%s", out, want)
	}
}

func readLock(t *testing.T, name string) *lockFile {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var lf lockFile
	if err := json.Unmarshal(data, &lf); err != nil {
		t.Fatal(err)
	}
	return &lf
}
