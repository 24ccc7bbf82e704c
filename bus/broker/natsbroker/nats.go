// Package natsbroker registers the "nats" broker scheme: NATS JetStream,
// through watermill-nats/v2.
//
// URL: nats://[user:password@]host:4222[?ack_wait=30s&max_ack_pending=64&max_age=0&replicas=1]
//
// An authentication token goes in the password, with the user "token":
// nats://token:TOKEN@host:4222, so that it is masked like a password in logs
// and errors (NATS's own nats://TOKEN@host form would show it).
//
// Query parameters:
//   - ack_wait: how long the server waits for a consumer's ack before
//     redelivering (default 30s); a message whose handler runs longer is
//     delivered again.
//   - max_ack_pending: messages a consumer group may hold unacknowledged
//     (default 64). Messages wait in the client while earlier ones are
//     handled, so keep max_ack_pending × handler time below ack_wait.
//   - max_age: how long a stream keeps messages (default 0: forever).
//   - replicas: stream replicas in a cluster (default 1).
//
// These apply when this package creates a stream or consumer; existing ones
// keep their settings.
//
// Layout: each topic is a JetStream stream, created on first use, capturing
// the subjects "<topic>.*"; a message is published on the subject
// "<topic>.<aggregate id>" (the aggregate id with '.', '*', '>' and spaces
// replaced by '_'), so a consumer may filter by aggregate and per-subject
// limits apply per aggregate. The stream name is the topic with characters
// invalid in stream names ('.', '*', '>', '/', '\', spaces) replaced by '_'
// and a hash of the topic appended when anything was replaced
// (edupulse.pulse → edupulse_pulse_4addafbf). A topic must be a valid NATS
// subject: dot-separated non-empty tokens, no spaces or wildcards.
//
// A consumer group is a durable push consumer per (group, topic), created
// by the first subscriber of the group and kept when subscribers stop (so a
// restarted group resumes where it was), delivering to a queue group named
// after the group: the group's subscribers share the messages. A new group
// starts from the oldest message the stream holds.
//
// Restarts and outages: clients reconnect for as long as it takes, with a
// pause of 100 ms doubling up to broker.Options.ReconnectMax (2 s by
// default; the reconnect_max URL parameter sets it) between attempts. A
// publish while the client is disconnected fails at once, and so do stream
// and consumer requests in flight when the connection drops, so that the
// relay's retry goes through as soon as the server is back. A subscriber's
// ack (or nak) that fails, as acks do across a restart ("no responders"
// until JetStream is back), is sent again, every 50 ms to 1 s, until the
// server answers, for at most ack_wait: an ack the server never got would
// hold one of the group's max_ack_pending slots until ack_wait expires, and
// with all of them held nothing new is delivered (watermill-nats's own
// subscriber logs and drops such acks: a restart stalled consumers for up
// to ack_wait, 30 s). Messages the server sent just before it stopped and
// the client never received are delivered again after ack_wait.
//
// Publish returns once JetStream acknowledged (stored) every message: the
// messages of one call are published asynchronously and their acks awaited
// together.
//
// Order: a stream keeps the publish order. A group with one subscriber
// handles each topic's messages one at a time in that order, so it sees every
// aggregate's events in order, except for redeliveries (a message not acked
// within ack_wait, or after a subscriber stopped mid-message). With several
// subscribers in a group, messages are spread over them regardless of the
// aggregate: per-aggregate order holds only per subscriber.
//
// Permanent errors (bus.Permanent: the relay dead-letters the event instead
// of retrying it for as long as it fails): a message above the server's
// max_payload ("nats: maximum payload exceeded", 1 MB by default), one a
// stream refuses for its size (JetStream errors 10054, above the stream's
// max_msg_size, and 10097, headers above 64 KiB), a topic that is no valid
// subject, and a publish the user's permissions deny (the server's
// "Permissions Violation for Publish to ..."; it drops such a message
// without an ack, so the publisher watches the connection's errors for it
// instead of waiting for the ack's timeout). Everything else, a lost
// connection, no JetStream response, an ack timeout, a full stream, is
// retried for as long as it lasts.
package natsbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/edupulse/eventbus/bus"
	"github.com/edupulse/eventbus/bus/broker"
)

// Scheme is the URL scheme this package registers.
const Scheme = "nats"

// Defaults of the URL's query parameters.
const (
	AckWaitDefault       = 30 * time.Second
	MaxAckPendingDefault = 64
	publishTimeout       = 30 * time.Second
	publishChunk         = 256 // below the async publish window of 1024
	connectTimeout       = 5 * time.Second
	// reconnectDelayInitial is the first pause between attempts to
	// reconnect (see reconnectDelay).
	reconnectDelayInitial = 100 * time.Millisecond
	maxNameLen            = 200
)

func init() { broker.Register(Scheme, Open) }

// config is what the URL says.
type config struct {
	serverURL     string // without our query parameters, nor a token
	token         string
	ackWait       time.Duration
	maxAckPending int
	maxAge        time.Duration
	replicas      int
	reconnectMax  time.Duration // broker.Options.ReconnectMax
}

func parseURL(u *url.URL) (config, error) {
	c := config{ackWait: AckWaitDefault, maxAckPending: MaxAckPendingDefault, replicas: 1}
	q := u.Query()
	for k := range q {
		if !slices.Contains([]string{"ack_wait", "max_ack_pending", "max_age", "replicas"}, k) {
			return c, fmt.Errorf("natsbroker: unknown query parameter %q (known: ack_wait, max_ack_pending, max_age, replicas)", k)
		}
	}
	var err error
	if c.ackWait, err = duration(q, "ack_wait", c.ackWait); err != nil {
		return c, err
	}
	if c.ackWait <= 0 {
		return c, errors.New("natsbroker: ack_wait must be positive")
	}
	if c.maxAge, err = duration(q, "max_age", 0); err != nil {
		return c, err
	}
	if c.maxAckPending, err = positive(q, "max_ack_pending", c.maxAckPending); err != nil {
		return c, err
	}
	if c.replicas, err = positive(q, "replicas", c.replicas); err != nil {
		return c, err
	}
	if u.Host == "" {
		return c, errors.New("natsbroker: missing host (nats://host:4222)")
	}
	s := *u
	s.RawQuery = ""
	s.Fragment = ""
	if u.User != nil && u.User.Username() == "token" {
		if p, ok := u.User.Password(); ok {
			c.token = p
			s.User = nil
		}
	}
	c.serverURL = s.String()
	return c, nil
}

func duration(q url.Values, key string, def time.Duration) (time.Duration, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("natsbroker: %s=%q: want a non-negative duration such as 30s", key, v)
	}
	return d, nil
}

func positive(q url.Values, key string, def int) (int, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("natsbroker: %s=%q: want a positive integer", key, v)
	}
	return n, nil
}

type natsBroker struct {
	cfg    config
	u      *url.URL
	logger watermill.LoggerAdapter
	conn   *nats.Conn
	js     nats.JetStreamContext
	pub    *publisher
	topo   *topology

	subs broker.Subscribers
}

// Open is the nats driver.
func Open(_ context.Context, u *url.URL, opts broker.Options) (broker.Broker, error) {
	cfg, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.reconnectMax = opts.ReconnectMax
	denied, link := &denials{}, newLink()
	conn, err := connect(cfg, "eventbus publisher", nats.ErrorHandler(denied.handle), nats.DisconnectErrHandler(link.lost))
	if err != nil {
		return nil, err
	}
	// The async timeout forgets a publish no ack will come for (one the
	// server refused with a permissions violation), so that such publishes
	// do not fill the window of pending acks.
	js, err := conn.JetStream(nats.PublishAsyncMaxPending(1024), nats.PublishAsyncTimeout(publishTimeout))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("natsbroker: jetstream: %w", err)
	}
	if _, err := js.AccountInfo(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("natsbroker: jetstream unavailable (is the server started with -js?): %w", err)
	}
	logger := watermill.NewSlogLogger(opts.Logger)
	topo := &topology{js: js, cfg: cfg, link: link}
	return &natsBroker{
		cfg: cfg, u: u, logger: logger, conn: conn, js: js, topo: topo,
		pub: &publisher{conn: conn, js: js, topo: topo, marshaler: &wmnats.NATSMarshaler{}, denied: denied},
	}, nil
}

func connect(cfg config, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.Timeout(connectTimeout), nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay(cfg.reconnectMax))}
	opts = append(opts, extra...)
	if cfg.token != "" {
		opts = append(opts, nats.Token(cfg.token))
	}
	conn, err := nats.Connect(cfg.serverURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: connect: %w", err)
	}
	return conn, nil
}

func (b *natsBroker) Publisher() message.Publisher {
	return broker.Publisher{Publisher: b.pub, Name: "natsbroker", URL: b.u, Permanent: permanent}
}

func (b *natsBroker) Subscriber(group string) (message.Subscriber, error) {
	if group == "" {
		return nil, errors.New("natsbroker: empty consumer group")
	}
	sub, err := broker.Track(&b.subs, func() (*subscriber, error) {
		conn, err := connect(b.cfg, "eventbus consumer "+group)
		if err != nil {
			return nil, errors.New(broker.RedactError(err, b.u))
		}
		sub, err := newSubscriber(conn, b.topo, group, b.cfg.ackWait, b.logger.With(watermill.LogFields{"consumer_group": group}))
		if err != nil {
			conn.Close()
			return nil, err
		}
		return sub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("natsbroker: subscriber %s: %w", group, err)
	}
	return sub, nil
}

func (b *natsBroker) Close() error {
	already, err := b.subs.Close(nil)
	if already {
		return nil
	}
	// Publish waits for its acks: nothing is left in flight.
	b.conn.Close()
	if err != nil {
		return fmt.Errorf("natsbroker: close subscribers: %w", err)
	}
	return nil
}

// reconnectDelay returns nats.go's pause before the n-th round of attempts
// to reconnect: 100 ms doubling up to max, less up to a quarter of it at
// random so that clients spread out.
func reconnectDelay(limit time.Duration) nats.ReconnectDelayHandler {
	return func(n int) time.Duration {
		d := min(reconnectDelayInitial<<min(max(n-1, 0), 16), limit)
		return d - time.Duration(rand.Int64N(int64(d/4)+1))
	}
}

// publisher publishes to JetStream with asynchronous acks, returning once all
// messages of a call are acknowledged.
type publisher struct {
	conn      *nats.Conn
	js        nats.JetStreamContext
	topo      *topology
	marshaler wmnats.Marshaler
	denied    *denials
}

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	switch {
	case p.conn.IsClosed():
		return nats.ErrConnectionClosed
	case !p.conn.IsConnected():
		// Fail at once: JetStream requests made while the client
		// reconnects wait for their timeout (5 s), holding up the retry
		// that would succeed once the server is back.
		return fmt.Errorf("%w (%s)", nats.ErrDisconnected, p.conn.Status())
	}
	if err := p.topo.ensureStream(topic); err != nil {
		return err
	}
	err := p.publish(topic, msgs)
	if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		// The stream was deleted behind our back: create it again, once.
		p.topo.forgetStream(topic)
		if err := p.topo.ensureStream(topic); err != nil {
			return err
		}
		err = p.publish(topic, msgs)
	}
	return err
}

// publish publishes msgs asynchronously, in chunks of at most
// publishChunk, and waits for each chunk's acks.
func (p *publisher) publish(topic string, msgs []*message.Message) error {
	for chunk := range slices.Chunk(msgs, publishChunk) {
		if err := p.publishChunk(topic, chunk); err != nil {
			return err
		}
	}
	return nil
}

func (p *publisher) publishChunk(topic string, msgs []*message.Message) error {
	futures := make([]nats.PubAckFuture, 0, len(msgs))
	subjects := make([]string, len(msgs))
	for i, msg := range msgs {
		subjects[i] = topic + "." + token(msg.Metadata.Get(bus.MetadataAggregateID))
	}
	denied := p.denied.watch(subjects)
	defer p.denied.unwatch(subjects, denied)
	var errs []error
	for i, msg := range msgs {
		nm, err := p.marshaler.Marshal(subjects[i], msg)
		if err == nil {
			var f nats.PubAckFuture
			if f, err = p.js.PublishMsgAsync(nm); err == nil {
				futures = append(futures, f)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("message %s: %w", msg.UUID, err))
		break // but wait for the acks of the messages already sent
	}
	timeout := time.NewTimer(publishTimeout)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("message %s: %w", msgs[i].UUID, err))
		case err := <-denied:
			// No ack will come for the refused message: stop waiting.
			return errors.Join(append(errs, err)...)
		case <-timeout.C:
			return errors.Join(append(errs, fmt.Errorf("message %s: no ack within %v", msgs[i].UUID, publishTimeout))...)
		}
	}
	return errors.Join(errs...)
}

func (p *publisher) Close() error { return nil } // the broker owns the connection

// errPublishDenied wraps the server's permissions violation for a publish.
var errPublishDenied = errors.New("publish denied")

// denials hands the server's permissions violations for publishes, which
// come asynchronously through the connection's error handler, to the
// publishes waiting for acks on those subjects: the server drops a refused
// message, and no ack or error would ever come for it.
type denials struct {
	mu       sync.Mutex
	watchers map[string][]chan error
}

// permissionsRe finds the subject in the server's error, "Permissions
// Violation for Publish to "SUBJECT"".
var permissionsRe = regexp.MustCompile(`(?i)permissions violation for publish to "([^"]+)"`)

// handle is the connection's error handler.
func (d *denials) handle(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	m := permissionsRe.FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ch := range d.watchers[m[1]] {
		select {
		case ch <- fmt.Errorf("subject %s: %w: %w", m[1], errPublishDenied, err):
		default: // one denial per publish is enough
		}
	}
}

// watch returns a channel receiving a denial of a publish to one of
// subjects.
func (d *denials) watch(subjects []string) chan error {
	ch := make(chan error, 1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watchers == nil {
		d.watchers = map[string][]chan error{}
	}
	for _, s := range subjects {
		d.watchers[s] = append(d.watchers[s], ch)
	}
	return ch
}

// unwatch undoes watch.
func (d *denials) unwatch(subjects []string, ch chan error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range subjects {
		w := slices.DeleteFunc(d.watchers[s], func(c chan error) bool { return c == ch })
		if len(w) == 0 {
			delete(d.watchers, s)
		} else {
			d.watchers[s] = w
		}
	}
}

// topology creates streams and consumers, remembering the streams it made
// sure of.
type topology struct {
	js   nats.JetStreamContext
	cfg  config
	link *link

	mu      sync.Mutex
	streams map[string]bool
}

func (t *topology) forgetStream(topic string) {
	t.mu.Lock()
	delete(t.streams, topic)
	t.mu.Unlock()
}

func (t *topology) ensureStream(topic string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.streams[topic] {
		return nil
	}
	if err := validSubject(topic); err != nil {
		return err
	}
	stream, subject := streamName(topic), topic+".*"
	ctx, cancel := t.link.context()
	defer cancel()
	info, err := t.js.StreamInfo(stream, nats.Context(ctx))
	switch {
	case errors.Is(err, nats.ErrStreamNotFound):
		_, err = t.js.AddStream(&nats.StreamConfig{
			Name:        stream,
			Description: "eventbus topic " + topic,
			Subjects:    []string{subject},
			Storage:     nats.FileStorage,
			Retention:   nats.LimitsPolicy,
			MaxAge:      t.cfg.maxAge,
			Replicas:    t.cfg.replicas,
		}, nats.Context(ctx))
		if err != nil && !errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", stream, err)
		}
	case err != nil:
		return fmt.Errorf("stream %s: %w", stream, err)
	case !slices.Contains(info.Config.Subjects, subject):
		return fmt.Errorf("stream %s exists with subjects %v, not %s", stream, info.Config.Subjects, subject)
	}
	if t.streams == nil {
		t.streams = map[string]bool{}
	}
	t.streams[topic] = true
	return nil
}

func (t *topology) ensureConsumer(group, queue, topic string) error {
	stream, durable := streamName(topic), consumerName(group, topic)
	ctx, cancel := t.link.context()
	defer cancel()
	info, err := t.js.ConsumerInfo(stream, durable, nats.Context(ctx))
	if errors.Is(err, nats.ErrConsumerNotFound) {
		info, err = t.js.AddConsumer(stream, &nats.ConsumerConfig{
			Durable:        durable,
			Description:    "eventbus group " + group + " on topic " + topic,
			DeliverSubject: nats.NewInbox(),
			DeliverGroup:   queue,
			DeliverPolicy:  nats.DeliverAllPolicy,
			FilterSubject:  topic + ".*",
			AckPolicy:      nats.AckExplicitPolicy,
			AckWait:        t.cfg.ackWait,
			MaxAckPending:  t.cfg.maxAckPending,
			MaxDeliver:     -1,
		}, nats.Context(ctx))
		if err != nil {
			// Another subscriber of the group may have created it.
			info, err = t.js.ConsumerInfo(stream, durable, nats.Context(ctx))
		}
	}
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", durable, stream, err)
	}
	if info.Config.DeliverGroup != queue {
		return fmt.Errorf("consumer %s on stream %s delivers to queue group %q, not %q", durable, stream, info.Config.DeliverGroup, queue)
	}
	return nil
}

// apiTimeout bounds a JetStream API request (stream and consumer info and
// creation), as nats.go's default does.
const apiTimeout = 5 * time.Second

// link tells the JetStream API requests of a connection that it was lost,
// so that they fail at once instead of waiting for apiTimeout: a request
// in flight when the server stops never gets its answer, and would hold up
// the publishes waiting for it after the client reconnected.
type link struct {
	mu       sync.Mutex
	lostChan chan struct{} // closed when the connection is lost, then replaced
}

func newLink() *link { return &link{lostChan: make(chan struct{})} }

// lost is the connection's disconnect handler.
func (l *link) lost(*nats.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.lostChan)
	l.lostChan = make(chan struct{})
}

// context returns a context for one request: done after apiTimeout, or
// when the connection is lost.
func (l *link) context() (context.Context, context.CancelFunc) {
	l.mu.Lock()
	lost := l.lostChan
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// errInvalidTopic is returned for a topic that is no valid NATS subject.
var errInvalidTopic = errors.New("invalid topic")

// validSubject checks that topic can prefix a NATS subject.
func validSubject(topic string) error {
	if topic == "" {
		return fmt.Errorf("%w: empty", errInvalidTopic)
	}
	for tok := range strings.SplitSeq(topic, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("%w %q: not a valid NATS subject (dot-separated non-empty tokens, no spaces or wildcards)", errInvalidTopic, topic)
		}
	}
	return nil
}

// JetStream error codes (the server's errors.json) of a message a stream
// refuses for good.
const (
	jsErrMessageExceedsMaximum nats.ErrorCode = 10054 // message size exceeds maximum allowed
	jsErrHeaderExceedsMaximum  nats.ErrorCode = 10097 // header size exceeds maximum allowed of 64k
)

// permanent reports whether a publish error is one NATS returns for these
// messages however often they are sent (see the package doc).
func permanent(err error) bool {
	var apiErr *nats.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jsErrMessageExceedsMaximum || apiErr.ErrorCode == jsErrHeaderExceedsMaximum) {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) ||
		errors.Is(err, errInvalidTopic) || errors.Is(err, errPublishDenied)
}

// token turns an aggregate id into one subject token.
func token(id string) string {
	if id == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, id)
}

// streamName maps a topic to a valid stream name.
func streamName(topic string) string { return name(topic) }

// consumerName is the durable consumer of group on topic.
func consumerName(group, topic string) string { return name(group + "@" + topic) }

// name maps s to a valid JetStream stream, consumer or queue name: invalid
// characters become '_', and a hash of s is appended when any did (or s is
// too long), so distinct inputs keep distinct names.
func name(s string) string {
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
	if clean == s && len(s) <= maxNameLen {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(s))
	clean = clean[:min(len(clean), maxNameLen)]
	return clean + "_" + fmt.Sprintf("%08x", h.Sum32())
}

// unmarshaler is watermill-nats's, tolerant: a message from another
// producer with a header set more than once still reaches the consumer (with
// the header's first value) instead of being left unacknowledged, and
// redelivered, forever.
type unmarshaler struct{ wmnats.NATSMarshaler }

func (u unmarshaler) Unmarshal(m *nats.Msg) (*message.Message, error) {
	if msg, err := u.NATSMarshaler.Unmarshal(m); err == nil {
		return msg, nil
	}
	md := make(message.Metadata, len(m.Header))
	for k, v := range m.Header {
		switch k {
		case wmnats.WatermillUUIDHdr, nats.MsgIdHdr, nats.ExpectedLastMsgIdHdr, nats.ExpectedStreamHdr, nats.ExpectedLastSubjSeqHdr, nats.ExpectedLastSeqHdr:
		default:
			if len(v) > 0 {
				md.Set(k, v[0])
			}
		}
	}
	msg := message.NewMessage(cmp.Or(m.Header.Get(wmnats.WatermillUUIDHdr), watermill.NewUUID()), m.Data)
	msg.Metadata = md
	return msg, nil
}
