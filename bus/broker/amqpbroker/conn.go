package amqpbroker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp "github.com/rabbitmq/amqp091-go"
)

// reconnectInitial is the first pause between attempts to reconnect; it
// doubles up to broker.Options.ReconnectMax.
const reconnectInitial = 100 * time.Millisecond

// conn is a connection to RabbitMQ that reconnects, for as long as it takes,
// when the broker closes it or goes away, pausing between attempts from
// reconnectInitial doubling up to max.
//
// It replaces watermill-amqp's ConnectionWrapper, whose reconnect backoff
// grows to 60 s and cannot be set through this package, and whose fields
// (the connection, the "connected" channel) are replaced on reconnect
// without synchronization while its subscribers and our publisher read them.
type conn struct {
	uri    string
	max    time.Duration
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	c       *amqp.Connection // nil while reconnecting
	changed chan struct{}    // closed, and replaced, when c changes
	done    chan struct{}    // closed by Close
	closed  bool
	wg      sync.WaitGroup // the watch goroutine
}

// dial connects, and keeps the connection up until Close.
func dial(uri string, reconnectMax time.Duration, logger watermill.LoggerAdapter) (*conn, error) {
	c, err := amqp.Dial(uri)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cn := &conn{uri: uri, max: reconnectMax, logger: logger, c: c, changed: make(chan struct{}), done: make(chan struct{})}
	cn.wg.Add(1)
	go cn.watch(c)
	return cn, nil
}

// current returns the connection, nil while reconnecting, and a channel
// closed when that changes.
func (cn *conn) current() (*amqp.Connection, <-chan struct{}) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.c, cn.changed
}

func (cn *conn) set(c *amqp.Connection) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.c = c
	close(cn.changed)
	cn.changed = make(chan struct{})
}

// watch waits for the connection to close, then reconnects, until Close.
func (cn *conn) watch(c *amqp.Connection) {
	defer cn.wg.Done()
	for {
		lost, err := notifyClose(c)
		if err != nil {
			cn.logger.Error("Recovered from a panic in the AMQP client, reconnecting", err, nil)
			_ = c.Close()
			lost = make(chan *amqp.Error, 1)
			lost <- nil
		}
		select {
		case <-cn.done:
			return
		case err := <-lost:
			cn.logger.Error("Connection to RabbitMQ lost, reconnecting", connErr(err), nil)
		}
		cn.set(nil)
		if c = cn.reconnect(); c == nil {
			return // closed meanwhile
		}
		cn.set(c)
		cn.logger.Info("Reconnected to RabbitMQ", nil)
	}
}

// notifyClose is c.NotifyClose, a panic in which is returned as an error.
func notifyClose(c *amqp.Connection) (ch chan *amqp.Error, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the AMQP client: %v", r)
		}
	}()
	return c.NotifyClose(make(chan *amqp.Error, 1)), nil
}

// reconnect dials until it succeeds (returning the connection) or Close is
// called (returning nil).
func (cn *conn) reconnect() *amqp.Connection {
	pause := reconnectInitial
	for attempt := 1; ; attempt++ {
		select {
		case <-cn.done:
			return nil
		// A quarter of the pause at random, so that clients spread out.
		case <-time.After(min(pause, cn.max) - time.Duration(rand.Int64N(int64(min(pause, cn.max)/4)+1))):
		}
		c, err := amqp.Dial(cn.uri)
		if err == nil {
			return c
		}
		if attempt == 1 || attempt%10 == 0 {
			cn.logger.Error("Cannot reconnect to RabbitMQ, retrying", err, watermill.LogFields{"attempt": attempt})
		}
		pause = min(2*pause, cn.max)
	}
}

// Close stops reconnecting and closes the connection.
func (cn *conn) Close() error {
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		return nil
	}
	cn.closed = true
	close(cn.done)
	cn.mu.Unlock()
	cn.wg.Wait()
	c, _ := cn.current()
	if c == nil {
		return nil
	}
	if err := c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return err
	}
	return nil
}

// connErr is the error a connection was closed with (nil when closed by the
// client).
func connErr(e *amqp.Error) error {
	if e == nil {
		return amqp.ErrClosed
	}
	return e
}
