package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/edupulse/eventbus/internal/brokertest/servers"
	"github.com/edupulse/eventbus/internal/childproc"
)

// Brokers of the network section, out of process.
const (
	// brokerNATS is nats-server with JetStream (file storage), the
	// embeddable server of nats-server/v2 run in a child process (this
	// binary re-executed).
	brokerNATS = "nats"
	// brokerRabbitMQ is a private rabbitmq-server (the Debian package),
	// started as the broker tests start it; skipped when not installed.
	brokerRabbitMQ = "rabbitmq"
	// brokerKafka is kfake, franz-go's Kafka, in a child process (this
	// binary re-executed).
	brokerKafka = "kafka"
)

var netBrokerNames = []string{brokerNATS, brokerRabbitMQ, brokerKafka}

// Child modes of the broker children.
const (
	childModeNATSServer  = "nats-server"
	childModeKafkaServer = "kafka-server"
)

// brokerChildReport is the first line a broker child prints: where it
// listens.
type brokerChildReport struct {
	Addr  string `json:",omitempty"`
	Error string `json:",omitempty"`
}

// brokerChildMain runs a broker in this process until stdin ends, after
// printing its address as a brokerChildReport.
func brokerChildMain(s childSpec, stdin io.Reader, stdout io.Writer) int {
	enc := json.NewEncoder(stdout)
	var addr string
	var stop func()
	var err error
	switch s.Mode {
	case childModeNATSServer:
		addr, stop, err = runNATSServer()
	case childModeKafkaServer:
		addr, stop, err = runKafkaServer(s.Advertise)
	default:
		err = fmt.Errorf("unknown broker child mode %q", s.Mode)
	}
	if err != nil {
		_ = enc.Encode(brokerChildReport{Error: err.Error()})
		return 1
	}
	defer stop()
	if err := enc.Encode(brokerChildReport{Addr: addr}); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, stdin) // until the bench closes it
	return 0
}

func runNATSServer() (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "bench-nats-")
	if err != nil {
		return "", nil, err
	}
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("nats-server: %w", err)
	}
	go srv.Start()
	stop = func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
	if !srv.ReadyForConnections(10 * time.Second) {
		stop()
		return "", nil, errors.New("nats-server not ready after 10s")
	}
	return srv.Addr().String(), stop, nil
}

// advertisedListener is a listener whose Addr is another address: kfake
// tells clients to connect to its listener's Addr, which must be the
// proxy's for the clients' traffic to go through it.
type advertisedListener struct {
	net.Listener
	advertise net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.advertise }

func runKafkaServer(advertise string) (addr string, stop func(), err error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return "", nil, fmt.Errorf("kfake: advertised address %q: %w", advertise, err)
	}
	var real string
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		real = ln.Addr().String()
		return advertisedListener{Listener: ln, advertise: adv}, nil
	}))
	if err != nil {
		return "", nil, fmt.Errorf("kfake: %w", err)
	}
	return real, c.Close, nil
}

// brokerChild is a running broker child process.
type brokerChild struct {
	proc   *childproc.Process
	stdin  *os.File
	stderr lockedBuffer
	addr   string
}

// startBrokerChild re-executes this binary as a broker child of mode and
// returns once it listens.
func startBrokerChild(ctx context.Context, mode, advertise string) (*brokerChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(childSpec{Mode: mode, Advertise: advertise})
	if err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, err
	}
	defer outR.Close()
	c := &brokerChild{stdin: inW}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnvVar+"="+string(spec))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &c.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.proc, err = childproc.Start(cmd)
	_ = inR.Close()
	_ = outW.Close()
	if err != nil {
		_ = inW.Close()
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Scan()
		line <- sc.Text()
	}()
	var rep brokerChildReport
	select {
	case l := <-line:
		if err := json.Unmarshal([]byte(l), &rep); err != nil {
			c.stop()
			return nil, fmt.Errorf("%s child answered %q: %w\n%s", mode, l, err, lastLines(c.stderr.String(), 20))
		}
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s child not ready after 30s\n%s", mode, lastLines(c.stderr.String(), 20))
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	if rep.Error != "" {
		c.stop()
		return nil, fmt.Errorf("%s child: %s", mode, rep.Error)
	}
	c.addr = rep.Addr
	return c, nil
}

func (c *brokerChild) pid() int { return c.proc.Cmd.Process.Pid }

// stop closes the child's stdin, which stops it, and kills it if it has
// not exited within 10 s.
func (c *brokerChild) stop() {
	_ = c.stdin.Close()
	select {
	case <-c.proc.Done():
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.proc.Done()
	}
}

// netBroker is one out-of-process broker of the network section, reached
// through a delayProxy, with a direct connection that counts what it
// stored.
type netBroker interface {
	name() string
	// url is the broker URL for broker.Open, through the proxy.
	url() string
	proxy() *delayProxy
	// reset forgets what was stored so far: stored counts from here.
	reset(ctx context.Context) error
	// stored returns the number of messages stored since reset.
	stored(ctx context.Context) (int64, error)
	// pgid is the process group of the broker's processes, for their CPU.
	pgid() int
	close()
}

// startNetBroker starts the broker name with its proxy (delay 0 until set).
// It returns errBrokerMissing (wrapped) when the broker cannot run here.
func startNetBroker(ctx context.Context, name, topic string) (netBroker, error) {
	switch name {
	case brokerNATS:
		return startNATSBroker(ctx)
	case brokerRabbitMQ:
		return startRabbitBroker(topic)
	case brokerKafka:
		return startKafkaBroker(ctx, topic)
	}
	return nil, fmt.Errorf("unknown broker %q", name)
}

// errBrokerMissing says a broker's server is not installed.
var errBrokerMissing = servers.ErrNotInstalled

type natsNetBroker struct {
	child *brokerChild
	px    *delayProxy
	nc    *nats.Conn
	js    nats.JetStreamContext
}

func startNATSBroker(ctx context.Context) (*natsNetBroker, error) {
	child, err := startBrokerChild(ctx, childModeNATSServer, "")
	if err != nil {
		return nil, err
	}
	b := &natsNetBroker{child: child}
	if b.px, err = newDelayProxy(child.addr, 0); err != nil {
		b.close()
		return nil, err
	}
	if b.nc, err = nats.Connect("nats://" + child.addr); err != nil {
		b.close()
		return nil, err
	}
	if b.js, err = b.nc.JetStream(); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *natsNetBroker) name() string       { return brokerNATS }
func (b *natsNetBroker) url() string        { return "nats://" + b.px.addr() }
func (b *natsNetBroker) proxy() *delayProxy { return b.px }
func (b *natsNetBroker) pgid() int          { return b.child.pid() }

// reset purges every stream (natsbroker makes one per topic).
func (b *natsNetBroker) reset(ctx context.Context) error {
	for name := range b.js.StreamNames(nats.Context(ctx)) {
		if err := b.js.PurgeStream(name, nats.Context(ctx)); err != nil {
			return fmt.Errorf("purge stream %s: %w", name, err)
		}
	}
	return nil
}

func (b *natsNetBroker) stored(ctx context.Context) (int64, error) {
	var n int64
	for info := range b.js.StreamsInfo(nats.Context(ctx)) {
		n += int64(info.State.Msgs)
	}
	return n, ctx.Err()
}

func (b *natsNetBroker) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.px != nil {
		b.px.close()
	}
	b.child.stop()
}

// rabbitNetBroker counts the messages of the topic in a durable queue of
// its own bound to the topic's exchange (amqpbroker's layout: a durable
// fanout exchange per topic; a message is confirmed once in every bound
// queue).
type rabbitNetBroker struct {
	srv   *servers.RabbitMQServer
	px    *delayProxy
	conn  *amqp.Connection
	ch    *amqp.Channel
	queue string
}

func startRabbitBroker(topic string) (*rabbitNetBroker, error) {
	srv, err := servers.StartRabbitMQ()
	if err != nil {
		return nil, err
	}
	b := &rabbitNetBroker{srv: srv, queue: "bench_count:" + topic}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	host := strings.TrimSuffix(strings.TrimPrefix(srv.URL, "amqp://guest:guest@"), "/")
	if b.px, err = newDelayProxy(host, 0); err != nil {
		return nil, err
	}
	if b.conn, err = amqp.Dial(srv.URL); err != nil {
		return nil, err
	}
	if b.ch, err = b.conn.Channel(); err != nil {
		return nil, err
	}
	if err = b.ch.ExchangeDeclare(topic, "fanout", true, false, false, false, nil); err != nil {
		return nil, err
	}
	if _, err = b.ch.QueueDeclare(b.queue, true, false, false, false, nil); err != nil {
		return nil, err
	}
	if err = b.ch.QueueBind(b.queue, "", topic, false, nil); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *rabbitNetBroker) name() string       { return brokerRabbitMQ }
func (b *rabbitNetBroker) url() string        { return "amqp://guest:guest@" + b.px.addr() + "/" }
func (b *rabbitNetBroker) proxy() *delayProxy { return b.px }
func (b *rabbitNetBroker) pgid() int          { return b.srv.Pid() }

func (b *rabbitNetBroker) reset(context.Context) error {
	_, err := b.ch.QueuePurge(b.queue, false)
	return err
}

func (b *rabbitNetBroker) stored(context.Context) (int64, error) {
	q, err := b.ch.QueueDeclarePassive(b.queue, true, false, false, false, nil)
	return int64(q.Messages), err
}

func (b *rabbitNetBroker) close() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	if b.px != nil {
		b.px.close()
	}
	_ = b.srv.Stop()
}

// kafkaNetBroker counts the messages of the topic from its partitions' end
// offsets, with a Sarama client that dials kfake directly (kfake
// advertises the proxy's address, so the dialer rewrites it).
type kafkaNetBroker struct {
	child  *brokerChild
	px     *delayProxy
	topic  string
	client sarama.Client
	base   int64
}

// redirectDialer dials to instead of from, and any other address as is.
type redirectDialer struct{ from, to string }

func (d redirectDialer) Dial(network, addr string) (net.Conn, error) {
	if addr == d.from {
		addr = d.to
	}
	return net.DialTimeout(network, addr, 5*time.Second)
}

func startKafkaBroker(ctx context.Context, topic string) (*kafkaNetBroker, error) {
	px, err := newDelayProxy("", 0)
	if err != nil {
		return nil, err
	}
	child, err := startBrokerChild(ctx, childModeKafkaServer, px.addr())
	if err != nil {
		px.close()
		return nil, err
	}
	px.setTarget(child.addr)
	return &kafkaNetBroker{child: child, px: px, topic: topic}, nil
}

func (b *kafkaNetBroker) name() string       { return brokerKafka }
func (b *kafkaNetBroker) url() string        { return "kafka://" + b.px.addr() }
func (b *kafkaNetBroker) proxy() *delayProxy { return b.px }
func (b *kafkaNetBroker) pgid() int          { return b.child.pid() }

// endOffsets sums the end offsets of the topic's partitions (the topic is
// created by the first publish: kafkabroker creates it).
func (b *kafkaNetBroker) endOffsets() (int64, error) {
	if b.client == nil {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.V2_3_0_0
		cfg.Net.Proxy.Enable = true
		cfg.Net.Proxy.Dialer = redirectDialer{from: b.px.addr(), to: b.child.addr}
		c, err := sarama.NewClient([]string{b.child.addr}, cfg)
		if err != nil {
			return 0, err
		}
		b.client = c
	}
	parts, err := b.client.Partitions(b.topic)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range parts {
		off, err := b.client.GetOffset(b.topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, err
		}
		n += off
	}
	return n, nil
}

func (b *kafkaNetBroker) reset(context.Context) error {
	if b.client != nil {
		if err := b.client.RefreshMetadata(b.topic); err != nil {
			return err
		}
	}
	n, err := b.endOffsets()
	b.base = n
	return err
}

func (b *kafkaNetBroker) stored(context.Context) (int64, error) {
	n, err := b.endOffsets()
	return n - b.base, err
}

func (b *kafkaNetBroker) close() {
	if b.client != nil {
		_ = b.client.Close()
	}
	b.px.close()
	b.child.stop()
}
