package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests use the generator as another module would: a temporary module
// requiring github.com/edupulse/eventbus, replaced by this working tree,
// runs go generate, go build, go vet and go test. Everything comes from
// the module cache (GOPROXY=off).

// repoRoot returns the root of this module.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !bytes.HasPrefix(data, []byte("module github.com/edupulse/eventbus\n")) {
		t.Fatalf("%s is not the eventbus module root: %v", root, err)
	}
	return root
}

// goDirective returns the go line of this module's go.mod.
func goDirective(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "go ") {
			return strings.TrimSpace(line)
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// newModule writes a module named modPath with the given files (by
// slash-separated path) into a temporary directory and returns it. Its
// go.mod requires eventbus and the generator's module, replaced by this
// working tree; it has no go.sum: the go command (run by goCmd with
// -mod=mod) records the sums it needs from the module cache, as it would
// for a user, and nothing is copied from eventbus's own go.sum.
func newModule(t *testing.T, modPath string, files map[string]string) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	goMod := "module " + modPath + "\n\n" + goDirective(t, root) + "\n\n" +
		"require github.com/edupulse/eventbus v0.0.0\n" +
		"require github.com/edupulse/eventbus/bus/cmd/eventgen v0.0.0\n\n" +
		"replace github.com/edupulse/eventbus => " + root + "\n" +
		"replace github.com/edupulse/eventbus/bus/cmd/eventgen => " + filepath.Join(root, "bus", "cmd", "eventgen") + "\n"
	all := map[string]string{"go.mod": goMod}
	for name, src := range files {
		all[name] = src
	}
	for name, src := range all {
		writeTestFile(t, filepath.Join(dir, filepath.FromSlash(name)), src)
	}
	return dir
}

func writeTestFile(t *testing.T, name, src string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goCmd runs the go command in dir, offline, letting it complete go.mod
// from the module cache. It returns the combined output.
func goCmd(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return goCmdEnv(t, dir, nil, args...)
}

// goCmdEnv is goCmd with extra environment variables.
func goCmdEnv(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GOPROXY=off",
		"GOSUMDB=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
	)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func mustGo(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := goCmd(t, dir, args...)
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// goGenerate is split so that go generate does not take the test modules'
// directives for this package's own.
const goGenerate = "//go:" + "generate"

const shopEvents = `// Package domain declares the shop's events.
package domain

` + goGenerate + ` go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../shopgen

import (
	"time"

	"github.com/google/uuid"
)

// OrderPlaced: a customer placed an order.
//
//eventbus:event name=shop.order.placed aggregate=OrderID
type OrderPlaced struct {
	OrderID    uuid.UUID         ` + "`json:\"order_id\"`" + `
	CustomerID uuid.UUID         ` + "`json:\"customer_id\"`" + `
	Lines      []LineItem        ` + "`json:\"lines\"`" + `
	Shipping   *Address          ` + "`json:\"shipping,omitempty\"`" + `
	Note       *string           ` + "`json:\"note,omitempty\"`" + `
	Tags       map[string]string ` + "`json:\"tags\"`" + `
	Stock      map[int64]int     ` + "`json:\"stock\"`" + `
	PlacedAt   time.Time         ` + "`json:\"placed_at\"`" + `
	Type       string            ` + "`json:\"type\"`" + `
}

// InvoiceIssued: an invoice was issued for an order.
//
//eventbus:event name=shop.billing.invoice_issued aggregate=Number aggregate_type=invoice
type InvoiceIssued struct {
	Number  int64      ` + "`json:\"number\"`" + `
	OrderID uuid.UUID  ` + "`json:\"order_id\"`" + `
	Total   Money      ` + "`json:\"total\"`" + `
	DueAt   *time.Time ` + "`json:\"due_at\"`" + `
}

// CustomerRenamed: a customer changed their name.
//
//eventbus:event name=shop.customer.renamed version=2 aggregate=Ref
type CustomerRenamed struct {
	Ref  string ` + "`json:\"ref\"`" + `
	Name string ` + "`json:\"name\"`" + `
}

// LineItem is one line of an order.
type LineItem struct {
	SKU      string ` + "`json:\"sku\"`" + `
	Quantity int    ` + "`json:\"quantity\"`" + `
	Price    Money  ` + "`json:\"price\"`" + `
}

// Money is an amount in cents.
type Money struct {
	Cents    int64  ` + "`json:\"cents\"`" + `
	Currency string ` + "`json:\"currency\"`" + `
}

// Address is where an order ships.
type Address struct {
	Street   string     ` + "`json:\"street\"`" + `
	City     string     ` + "`json:\"city\"`" + `
	Location [2]float64 ` + "`json:\"location\"`" + `
}
`

const shopMain = `// Command app publishes nothing; it shows the generated API in use.
package main

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"example.com/shop/shopgen"
)

func main() {
	ev := shopgen.NewCustomerRenamed("c-42", "Ada")
	fmt.Println(ev.Kind(), ev.Envelope().AggregateID, time.Now().IsZero(), uuid.Nil)
}
`

const shopTest = `package main

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"example.com/shop/domain"
	"example.com/shop/shopgen"
)

func TestRoundTrip(t *testing.T) {
	note := "leave at the door"
	due := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	price := domain.Money{Cents: 1999, Currency: "EUR"}
	evs := []shopgen.Event{
		shopgen.NewOrderPlaced(uuid.New(), uuid.New(),
			[]domain.LineItem{{SKU: "book", Quantity: 2, Price: price}},
			&domain.Address{Street: "1 Main St", City: "Springfield", Location: [2]float64{1.5, -2.25}},
			&note, map[string]string{"gift": "yes"}, map[int64]int{7: 3},
			time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC), "express"),
		shopgen.NewInvoiceIssued(1001, uuid.New(), price, &due),
		shopgen.NewCustomerRenamed("c-42", "Ada"),
	}
	wantIDs := []string{evs[0].(shopgen.OrderPlaced).OrderID.String(), "1001", "c-42"}
	for i, ev := range evs {
		if got := ev.Envelope().AggregateID; got != wantIDs[i] {
			t.Errorf("%s: aggregate id %q, want %q", ev.EventName(), got, wantIDs[i])
		}
		msg, err := shopgen.Registry().NewMessage(context.Background(), ev)
		if err != nil {
			t.Fatalf("NewMessage(%s): %v", ev.EventName(), err)
		}
		got, err := shopgen.Registry().Decode(msg.Copy())
		if err != nil {
			t.Fatalf("Decode(%s): %v", ev.EventName(), err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("%s: decoded\n%#v\nwant\n%#v", ev.EventName(), got, ev)
		}
		k, err := shopgen.ParseKind(ev.Kind().String())
		if err != nil || k != ev.Kind() {
			t.Errorf("ParseKind(%q) = %v, %v", ev.Kind().String(), k, err)
		}
	}
	if s := shopgen.KindCustomerRenamed.String(); s != "shop.customer.renamed@v2" {
		t.Errorf("KindCustomerRenamed.String() = %q", s)
	}
}
`

func TestSecondModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a temporary module")
	}
	t.Parallel()
	dir := newModule(t, "example.com/shop", map[string]string{
		"domain/domain.go": shopEvents,
		"app/main.go":      shopMain,
		"app/main_test.go": shopTest,
	})
	mustGo(t, dir, "generate", "./...")
	gen := filepath.Join(dir, "shopgen", eventsFile)
	first, err := os.ReadFile(gen)
	if err != nil {
		t.Fatalf("go generate wrote no %s: %v", eventsFile, err)
	}
	for _, want := range []string{
		"package shopgen\n",
		"// source: example.com/shop/domain\n",
		"\t\"example.com/shop/domain\"\n",
		"func NewOrderPlaced(orderID uuid.UUID, customerID uuid.UUID, lines []domain.LineItem, shipping *domain.Address, note *string, tags map[string]string, stock map[int64]int, placedAt time.Time, type_ string) OrderPlaced {",
		`bus.NewEnvelope("invoice", strconv.FormatInt(e.Number, 10))`,
		`bus.NewEnvelope("customer", e.Ref)`,
	} {
		if !bytes.Contains(first, []byte(want)) {
			t.Errorf("%s lacks %q", eventsFile, want)
		}
	}
	mustGo(t, dir, "build", "./...")
	mustGo(t, dir, "vet", "./...")
	mustGo(t, dir, "test", "-count=1", "./...")

	mustGo(t, dir, "generate", "./...")
	second, err := os.ReadFile(gen)
	if err != nil || !bytes.Equal(first, second) {
		t.Errorf("a second go generate changed %s (err %v)", eventsFile, err)
	}
}

// exhaustiveEvents returns an events package declaring the named events.
func exhaustiveEvents(names ...string) string {
	var b strings.Builder
	b.WriteString("// Package ev declares events.\npackage ev\n\n" + goGenerate + " go run github.com/edupulse/eventbus/bus/cmd/eventgen -out ../evgen\n")
	for _, n := range names {
		b.WriteString("\n// " + n + " happened.\n//\n//eventbus:event name=test." + strings.ToLower(n) + ".happened aggregate=ID\ntype " + n + " struct{ ID string }\n")
	}
	return b.String()
}

func handlerMethods(recv string, names ...string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString("\nfunc (" + recv + ") Handle" + n + "(context.Context, evgen." + n + ") error { return nil }\n")
	}
	return b.String()
}

// TestExhaustiveHandler checks the point of the Handler interface: adding an
// event breaks the build of handlers implementing it directly, not of those
// embedding UnhandledEvents.
func TestExhaustiveHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a temporary module")
	}
	t.Parallel()
	four := []string{"Alpha", "Bravo", "Charlie", "Delta"}
	handlerFile := func(pkg, typ string) string {
		return "package " + pkg + "\n\nimport (\n\t\"context\"\n\n\t\"example.com/exh/evgen\"\n)\n\n" +
			"// Handler handles events.\ntype Handler " + typ + "\n\nvar _ evgen.Handler = Handler{}\n"
	}
	dir := newModule(t, "example.com/exh", map[string]string{
		"ev/ev.go":                  exhaustiveEvents(four...),
		"handlers/direct/direct.go": handlerFile("direct", "struct{}") + handlerMethods("Handler", four...),
		"handlers/partial/partial.go": handlerFile("partial", "struct{ evgen.UnhandledEvents }") +
			handlerMethods("Handler", "Bravo"),
	})
	mustGo(t, dir, "generate", "./...")
	mustGo(t, dir, "build", "./...")

	writeTestFile(t, filepath.Join(dir, "ev", "ev.go"), exhaustiveEvents(append(four, "Echo")...))
	mustGo(t, dir, "generate", "./...")
	out, err := goCmd(t, dir, "build", "./...")
	if err == nil {
		t.Fatalf("go build succeeded after adding event Echo; want a missing-method error")
	}
	if !strings.Contains(out, "missing method HandleEcho") || !strings.Contains(out, "handlers/direct") {
		t.Errorf("go build output does not name the missing method HandleEcho in handlers/direct:\n%s", out)
	}
	if strings.Contains(out, "handlers/partial") {
		t.Errorf("handlers/partial, which embeds UnhandledEvents, failed too:\n%s", out)
	}
	mustGo(t, dir, "build", "./evgen", "./handlers/partial")
}
