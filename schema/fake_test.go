package schema_test

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// fakeServer answers the server version query with a version of its own.
type fakeServer struct {
	num     int
	version string
}

func (f fakeServer) Begin(context.Context) (pgx.Tx, error) { return nil, errors.New("fake server") }

func (f fakeServer) QueryRow(context.Context, string, ...any) pgx.Row { return fakeRow(f) }

type fakeRow fakeServer

func (r fakeRow) Scan(dest ...any) error {
	*dest[0].(*int) = r.num
	*dest[1].(*string) = r.version
	return nil
}
