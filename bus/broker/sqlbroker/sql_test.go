package sqlbroker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edupulse/eventbus/bus/broker/brokertest"
	_ "github.com/edupulse/eventbus/bus/broker/sqlbroker"
	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Features{
		OrderPerAggregate: true,
		Refusal: &brokertest.Refusal{
			Title:     brokertest.OversizedTitle(maxPayload),
			Error:     `violates check constraint "payload_size"`,
			BrokerURL: limitedDatabase,
		},
		// A cluster of its own: the shared one holds the application's
		// database too.
		Restartable: func(t *testing.T) brokertest.Restarter { return servers.RestartablePostgres(t) },
	}, func(t *testing.T) string {
		return pgtest.NewDatabase(t) // a database of its own serves as the broker
	})
}

// maxPayload is the payload size limit of limitedDatabase.
const maxPayload = 64 << 10

// limitedDatabase returns the URL of a new database in which every table
// the broker creates gets a CHECK constraint refusing payloads above
// maxPayload bytes, as an operator may add.
func limitedDatabase(t *testing.T) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// An event trigger (the test's user is a superuser) constrains each
	// new table with a payload column.
	if _, err := conn.Exec(ctx, fmt.Sprintf(`
CREATE FUNCTION limit_payload() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
	FOR r IN SELECT objid, object_identity FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
		IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = r.objid AND attname = 'payload') THEN
			EXECUTE format('ALTER TABLE %%s ADD CONSTRAINT payload_size CHECK (octet_length(payload::text) <= %d)', r.object_identity);
		END IF;
	END LOOP;
END $$;
CREATE EVENT TRIGGER limit_payload ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION limit_payload();
`, maxPayload)); err != nil {
		t.Fatalf("limit payloads: %v", err)
	}
	return url
}
