// Package mqtt wakes devices over MQTT: an embedded broker (Broker) that
// devices connect to, or a Publisher for an external broker (several
// replicas), each a fota.Notifier; and the external broker's password and
// ACL files (MosquittoFiles).
//
// Threat model. A notification carries no secret and no instruction: it
// only makes a device check in over the authenticated HTTP API, so a
// forged, replayed or lost one costs a check or some time, never an
// update, and the broker guards little: who may listen for a
// device's notifications, and that nobody but the server can send one.
//   - A device logs in with its id as user name and client id, and
//     protocol.MQTTPassword(psk, id) as password: derived from its key, so
//     there is nothing new to provision, and one-way, so the broker (or a
//     leak of its cache) learns nothing of the key.
//   - A device may subscribe to its own topic (protocol.NotifyTopic) and
//     nothing else, and may publish nothing: no will, no retained message,
//     no PUBLISH. Only the server's inline client publishes.
//   - An unauthenticated connection is held for at most connectTimeout,
//     and the number of open connections is bounded, so a flood of idle
//     sockets cannot exhaust the server.
//
// What is not defended: a device removed while connected keeps its
// connection (and so its own, empty, notification stream) until it
// disconnects; the server stops notifying removed devices, so it hears
// nothing.
package mqtt

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// Tunables. The broker is tuned for many small idle clients that receive a
// rare notification of under 128 bytes and send nothing but PINGREQ and
// PUBACK.
const (
	// DefaultMaxClients is BrokerConfig.MaxClients when it is 0.
	DefaultMaxClients = 50_000

	// maxPacketSize bounds every packet a device sends (CONNECT is the
	// largest: id, password and a few v5 properties).
	maxPacketSize = 1024
	// readBufferSize and writeBufferSize are each client's bufio sizes;
	// mochi's defaults (2 KiB) cost 20 MiB more at 10,000 clients for
	// nothing a notification needs.
	readBufferSize  = 256
	writeBufferSize = 512
	// writesPending is the capacity of each client's outbound channel,
	// allocated up front per client: mochi's default (8192) is 64 KiB a
	// client. A device is sent at most a handful of notifications at once;
	// beyond this they are dropped, and the device's timer covers it.
	writesPending = 8
	// inflight bounds unacknowledged QoS 1 messages kept per client.
	inflight = 8
	// sessionExpiry is how long a disconnected session (subscription and
	// unacknowledged notifications) is kept for a device that asked to keep
	// it. Short: a device re-subscribes when it reconnects anyway.
	sessionExpiry = 60 // seconds
	// messageExpiry drops unacknowledged notifications after this long: a
	// stale "check now" is worth nothing.
	messageExpiry = 300 // seconds

	// connectTimeout bounds the time from accept to a CONNECT read
	// (including the TLS handshake); mochi itself sets no deadline before
	// CONNECT.
	connectTimeout = 10 * time.Second
	// preAuthSlack is how many connections beyond MaxClients may be open
	// while they authenticate; beyond it new sockets are closed at once.
	// Within it, mochi refuses the surplus with CONNACK "server
	// unavailable" (3.1.1) or "server busy" (5).
	preAuthSlack = 1024

	// lookupTimeout bounds one store lookup; lookupConcurrency bounds how
	// many run at once, so 10,000 devices reconnecting together queue for
	// the store instead of opening 10,000 queries.
	lookupTimeout     = 5 * time.Second
	lookupConcurrency = 16
	// credTTL is how long a derived password is cached: a removed device
	// or a changed key stops working for new connections within it.
	// credNegativeTTL is the same for ids that are unknown or removed,
	// shorter so a newly registered device is not kept waiting.
	credTTL         = time.Minute
	credNegativeTTL = 10 * time.Second

	// queueSize bounds the notifications waiting to be published.
	queueSize = 65_536
	// dropLogInterval spaces the warnings about dropped notifications and
	// store failures.
	dropLogInterval = time.Minute
)

// BrokerConfig configures NewBroker.
type BrokerConfig struct {
	Listen string      // e.g. ":1883"; required
	TLS    *tls.Config // nil: plain TCP
	// Device looks a device up (the store's Device); ENOTFOUND for unknown ids.
	Device     func(ctx context.Context, id string) (*fota.Device, error)
	Logger     *slog.Logger // nil: discard
	MaxClients int          // 0: DefaultMaxClients; connections beyond it refused

	// queueSize, when set, replaces the package's queueSize (tests).
	queueSize int
}

// BrokerStats are the broker's counters.
type BrokerStats struct {
	Connected    int64  // devices connected (authenticated) now
	Published    uint64 // notifications handed to the broker (online or not)
	Delivered    uint64 // notifications written to a device's connection
	Dropped      uint64 // notifications dropped: queue full, invalid id or broker closed
	AuthFailures uint64 // connections refused: credentials, client id or a will
}

// Broker is the embedded MQTT broker; it implements fota.Notifier.
type Broker struct {
	server *mochi.Server
	ln     *listener
	log    *slog.Logger
	creds  *credCache

	queue   chan note
	publish func(topic string, payload []byte) error // the worker's sink; tests replace it
	done    chan struct{}
	worker  sync.WaitGroup

	published    atomic.Uint64
	delivered    atomic.Uint64
	dropped      atomic.Uint64
	authFailures atomic.Uint64
	dropLog      every
	storeLog     every

	closeOnce sync.Once
	closeErr  error
}

var _ fota.Notifier = (*Broker)(nil)

// note is one notification waiting for the worker.
type note struct {
	topic   string
	payload []byte
}

// NewBroker listens on cfg.Listen and serves devices until Close.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Listen == "" {
		return nil, errors.New("mqtt broker: no listen address")
	}
	if cfg.Device == nil {
		return nil, errors.New("mqtt broker: no device lookup")
	}
	if cfg.MaxClients < 0 {
		return nil, fmt.Errorf("mqtt broker: max clients %d is negative", cfg.MaxClients)
	}
	maxClients := cfg.MaxClients
	if maxClients == 0 {
		maxClients = DefaultMaxClients
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	qsize := cfg.queueSize
	if qsize <= 0 {
		qsize = queueSize
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("mqtt broker: listen on %s: %w", cfg.Listen, err)
	}

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(maxClients)
	caps.MaximumClientWritesPending = writesPending
	caps.MaximumInflight = inflight
	caps.ReceiveMaximum = inflight
	caps.MaximumPacketSize = maxPacketSize
	caps.MaximumSessionExpiryInterval = sessionExpiry
	caps.MaximumMessageExpiryInterval = messageExpiry
	caps.MaximumQos = 1
	caps.TopicAliasMaximum = 0 // one topic a device: aliases save nothing
	// RetainAvailable stays on: off, mochi would refuse a retained will
	// with a v5-only code even to 3.1.1 clients, before OnConnect refuses
	// every will properly. Nothing is retained anyway: devices may not
	// publish and the server publishes with retain false.

	server := mochi.New(&mochi.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  readBufferSize,
		ClientNetWriteBufferSize: writeBufferSize,
		Logger:                   slog.New(quietHandler{log.With("component", "mqtt").Handler()}),
		InlineClient:             true,
		// $SYS topics nobody may read: publish them as rarely as possible
		// (each round reads runtime.MemStats).
		SysTopicResendInterval: math.MaxInt32,
	})

	b := &Broker{
		server: server,
		log:    log,
		creds:  newCredCache(cfg.Device, max(maxClients, 1024)),
		queue:  make(chan note, qsize),
		done:   make(chan struct{}),
	}
	b.publish = func(topic string, payload []byte) error {
		return server.Publish(topic, payload, false, 1)
	}
	b.ln = &listener{
		ln:       ln,
		tls:      cfg.TLS,
		maxConns: maxClients + preAuthSlack,
		log:      log,
		conns:    make(map[net.Conn]struct{}),
	}

	if err := server.AddHook(&deviceHook{b: b}, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mqtt broker: add device hook: %w", err)
	}
	if err := server.AddListener(b.ln); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mqtt broker: add listener: %w", err)
	}
	if err := server.Serve(); err != nil {
		server.Close()
		return nil, fmt.Errorf("mqtt broker: serve: %w", err)
	}
	b.worker.Add(1)
	go b.work()
	log.Info("mqtt broker listening", "address", ln.Addr().String(), "tls", cfg.TLS != nil, "max_clients", maxClients)
	return b, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.ln.ln.Addr() }

// Notify queues n for each device and returns at once. A device that is
// offline when its notification is published is simply not notified: its
// timer (every six hours) brings it in anyway. When the queue is full the
// notification is dropped, counted and, once a while, logged.
func (b *Broker) Notify(deviceIDs []string, n protocol.Notification) {
	payload := n.Marshal()
	var dropped int
	for _, id := range deviceIDs {
		if !protocol.ValidDeviceID(id) {
			// Cannot be a device's topic, and '+' or '#' in it would
			// match others'.
			dropped++
			continue
		}
		select {
		case <-b.done:
			dropped++
			continue
		default:
		}
		select {
		case b.queue <- note{topic: protocol.NotifyTopic(id), payload: payload}:
		default:
			dropped++
		}
	}
	if dropped > 0 {
		total := b.dropped.Add(uint64(dropped))
		if b.dropLog.allow(dropLogInterval) {
			b.log.Warn("mqtt notifications dropped (queue full or device id invalid); devices will check in on their timer",
				"dropped", dropped, "dropped_total", total, "queue", cap(b.queue))
		}
	}
}

// work drains the queue. mochi's Publish only puts the packet on each
// subscriber's outbound channel (dropping it when that is full), so one
// worker keeps up with any number of slow devices.
func (b *Broker) work() {
	defer b.worker.Done()
	for {
		select {
		case <-b.done:
			return
		case nt := <-b.queue:
			if err := b.publish(nt.topic, nt.payload); err != nil {
				b.dropped.Add(1)
				if b.dropLog.allow(dropLogInterval) {
					b.log.Warn("mqtt publish failed", "topic", nt.topic, "error", err)
				}
				continue
			}
			b.published.Add(1)
		}
	}
}

// Stats returns the broker's counters.
func (b *Broker) Stats() BrokerStats {
	return BrokerStats{
		Connected:    atomic.LoadInt64(&b.server.Info.ClientsConnected),
		Published:    b.published.Load(),
		Delivered:    b.delivered.Load(),
		Dropped:      b.dropped.Load(),
		AuthFailures: b.authFailures.Load(),
	}
}

// Close stops listening, disconnects every client and stops the worker;
// notifications still queued are dropped (the devices' timers cover them).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		b.worker.Wait()
		// mochi's Close closes our listener (which closes every
		// connection) and waits for the clients' goroutines.
		b.closeErr = b.server.Close()
		if err := b.ln.closeErr(); err != nil && b.closeErr == nil {
			b.closeErr = fmt.Errorf("mqtt broker: close listener: %w", err)
		}
	})
	return b.closeErr
}

// deviceHook is the broker's authentication and ACL.
type deviceHook struct {
	mochi.HookBase
	b        *Broker
	approved sync.Map // *mochi.Client -> struct{}: passed OnConnect
}

func (h *deviceHook) ID() string { return "fota-devices" }

func (h *deviceHook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPacketSent, mochi.OnWill:
		return true
	}
	return false
}

// refusal is why a CONNECT is refused, with its CONNACK codes. mochi's
// own authentication failure answers 3.1.1 clients 0x05 (not authorized)
// where 3.1.1 has 0x04 (bad user name or password), and can send no other
// code, so the refusal is sent here and OnConnectAuthenticate only lets
// through what OnConnect approved.
type refusal struct {
	reason string
	v3, v5 packets.Code // the v3 code is given as the v5 code mochi maps to it
}

var (
	refuseCredentials = refusal{"bad user name or password", packets.ErrMalformedUsername /* → 0x04 */, packets.ErrBadUsernameOrPassword /* 0x86 */}
	refuseClientID    = refusal{"client id is not the user name", packets.ErrClientIdentifierNotValid /* → 0x02 */, packets.ErrClientIdentifierNotValid /* 0x85 */}
	refuseWill        = refusal{"will message not allowed", packets.ErrBadUsernameOrPassword /* → 0x05 */, packets.ErrNotAuthorized /* 0x87 */}
	refuseUnavailable = refusal{"device store unavailable", packets.ErrServerUnavailable /* → 0x03 */, packets.ErrServerUnavailable /* 0x88 */}
)

// errRefused is what OnConnect returns after sending a refusal; mochi then
// closes the connection.
var errRefused = errors.New("mqtt connection refused")

func (h *deviceHook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	user := string(pk.Connect.Username)
	r, err := h.check(cl, pk)
	if r == nil {
		h.approved.Store(cl, struct{}{})
		return nil
	}
	b := h.b
	if *r == refuseUnavailable {
		if b.storeLog.allow(dropLogInterval) {
			b.log.Warn("mqtt connection refused: device lookup failed", "device_id", user, "error", err)
		}
	} else {
		b.authFailures.Add(1)
		// Debug only: 10,000 devices with a stale key would otherwise
		// flood the log. The password is never logged.
		if protocol.ValidDeviceID(user) {
			b.log.Debug("mqtt connection refused", "device_id", user, "reason", r.reason, "remote", cl.Net.Remote)
		} else {
			b.log.Debug("mqtt connection refused", "reason", r.reason, "remote", cl.Net.Remote)
		}
	}
	code := r.v3
	if cl.Properties.ProtocolVersion >= 5 {
		code = r.v5
	}
	if err := b.server.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("%w (%s), and the CONNACK failed: %w", errRefused, r.reason, err)
	}
	return fmt.Errorf("%w: %s", errRefused, r.reason)
}

// check returns nil if the CONNECT may proceed, and otherwise the refusal
// with, for refuseUnavailable, the store's error.
func (h *deviceHook) check(cl *mochi.Client, pk packets.Packet) (*refusal, error) {
	user := string(pk.Connect.Username)
	switch {
	case !pk.Connect.UsernameFlag || !pk.Connect.PasswordFlag || !protocol.ValidDeviceID(user):
		return &refuseCredentials, nil
	case pk.Connect.ClientIdentifier != user:
		return &refuseClientID, nil
	case pk.Connect.WillFlag:
		// mochi publishes a will without an ACL check.
		return &refuseWill, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	want, err := h.b.creds.password(ctx, user)
	if err != nil {
		return &refuseUnavailable, err
	}
	// want is "" for unknown and removed devices: no password matches it,
	// and the refusal is the same as for a wrong password.
	if want == "" || subtle.ConstantTimeCompare([]byte(want), pk.Connect.Password) != 1 {
		return &refuseCredentials, nil
	}
	return nil, nil
}

func (h *deviceHook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	_, ok := h.approved.LoadAndDelete(cl)
	return ok
}

// OnACLCheck lets a device read its own topic, exactly, and write nothing.
// A refused subscription is answered with SUBACK 0x80 (3.1.1) or 0x87 (5).
// A refused PUBLISH is dropped: at QoS 0 silently; at QoS 1 a v5 client
// gets PUBACK 0x87 (not authorized) and a 3.1.1 client, which has no way
// to be told, is disconnected (mochi's behaviour, kept: a device that
// publishes is misbehaving). The server's inline client bypasses this.
func (h *deviceHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return !write && topic == protocol.NotifyTopic(cl.ID)
}

// OnWill clears any will: OnConnect refuses them already, this keeps one
// from ever being published if that changes.
func (h *deviceHook) OnWill(cl *mochi.Client, _ mochi.Will) (mochi.Will, error) {
	return mochi.Will{}, nil
}

func (h *deviceHook) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.b.delivered.Add(1)
	}
}

// listener is mochi's TCP listener plus what it lacks: a deadline for the
// CONNECT (and TLS handshake), a bound on open connections, closing the
// connections that have not authenticated yet, and the net.Addr.
type listener struct {
	ln       net.Listener
	tls      *tls.Config
	maxConns int
	log      *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // Serve and the connections' goroutines
	err    error          // from closing ln
}

func (l *listener) ID() string                { return "fota-mqtt" }
func (l *listener) Address() string           { return l.ln.Addr().String() }
func (l *listener) Protocol() string          { return "tcp" }
func (l *listener) Init(_ *slog.Logger) error { return nil } // already listening

func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	var refusedLog every
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		l.mu.Lock()
		if l.closed || len(l.conns) >= l.maxConns {
			full := !l.closed
			l.mu.Unlock()
			conn.Close()
			if full && refusedLog.allow(dropLogInterval) {
				l.log.Warn("mqtt connection refused: too many open connections", "max", l.maxConns)
			}
			continue
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()

		go func() {
			defer l.wg.Done()
			defer func() {
				l.mu.Lock()
				delete(l.conns, conn)
				l.mu.Unlock()
				conn.Close()
			}()
			// mochi replaces this deadline with the keepalive's once the
			// CONNECT is read.
			_ = conn.SetDeadline(time.Now().Add(connectTimeout))
			c := conn
			if l.tls != nil {
				c = tls.Server(conn, l.tls)
			}
			if err := establish(l.ID(), c); err != nil {
				// Per connection, so Debug: disconnects, refusals, timeouts.
				l.log.Debug("mqtt connection ended", "remote", conn.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

// Close disconnects the authenticated clients (a DISCONNECT for v5), then
// closes every other connection and the listener, and waits for their
// goroutines.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.err = l.ln.Close()
	closeClients(l.ID())
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

func (l *listener) closeErr() error {
	if errors.Is(l.err, net.ErrClosed) {
		return nil
	}
	return l.err
}

// every allows one event per interval (for logs that could flood).
type every struct {
	mu   sync.Mutex
	last time.Time
}

func (e *every) allow(d time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < d {
		return false
	}
	e.last = now
	return true
}
