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
//     no PUBLISH. Only the broker's notification worker publishes.
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
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
	// largest: id, password and a few v5 properties); v5 clients are told.
	maxPacketSize = 1024
	// readBufferSize is each connection's bufio size: a device sends a
	// CONNECT, a SUBSCRIBE and then PINGREQs and PUBACKs of a few bytes.
	readBufferSize = 256
	// receiveMaximum is the v5 receive maximum the broker announces: a
	// device may publish nothing, so it never needs more than one.
	receiveMaximum = 1
	// sendInflight bounds the QoS 1 notifications sent to one connection
	// and not yet acknowledged (fewer if a v5 client's receive maximum is
	// lower). A device that stops acknowledging gets no more: so our
	// writes to a dead peer never fill its socket buffer and block.
	sendInflight = 8
	// writeTimeout bounds every write to a connection: a notification,
	// an acknowledgement, a DISCONNECT. A write that misses it closes the
	// connection, so a dead peer cannot hold the notification worker.
	writeTimeout = 2 * time.Second
	// notifyWriteTimeout bounds the worker's write of one notification,
	// and notifyLockTries (1 ms apart) its wait for a connection's
	// writer (conn.notify).
	notifyWriteTimeout = 200 * time.Millisecond
	notifyLockTries    = 5

	// connectTimeout bounds the time from accept to a CONNECT read
	// (including the TLS handshake) and answered.
	connectTimeout = 10 * time.Second
	// maxKeepalive caps the keepalive the broker honours (MQTT: close a
	// connection silent for 1.5 × keepalive), so dead sockets do not pile
	// up: a v5 client asking for none (0) or more is told this one
	// (server keep alive); a 3.1.1 client, which cannot be told, is closed
	// after 1.5 × maxKeepalive of silence. Devices ping every minute.
	maxKeepalive = 20 * 60 // seconds
	// preAuthSlack is how many connections beyond MaxClients may be open
	// while they authenticate; beyond it new sockets are closed at once.
	// Within it, the surplus is refused with CONNACK "server unavailable"
	// (3.1.1) or "server busy" (5).
	preAuthSlack = 1024
	// preAuthPerAddress bounds the connections one address (IPv6: one
	// /64) holds before they authenticate, so that one host cannot hold
	// every socket for the CONNECT deadline; devices behind one NAT
	// authenticate within milliseconds of connecting, so they rarely
	// hold more than a few at once.
	preAuthPerAddress = 256
	// reservedFiles are the file descriptors kept for the rest of the
	// server (HTTP connections up to --max-conns, the database, blobs):
	// the broker's sockets stop there, or a flood of them would starve
	// every other part of the process.
	reservedFiles = 4096

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

	// queueSize and maxKeepalive, when set, replace the package's
	// constants; wrapListener wraps the listener (tests).
	queueSize    int
	maxKeepalive uint16
	wrapListener func(net.Listener) net.Listener
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
//
// It is no general broker: a device may only subscribe to its own topic,
// so "routing" is a map from device id to its connection, and the only
// publisher is Notify's worker, which writes each notification straight
// to the connection's socket. Each connection has one goroutine, its
// reader (conn.serve); there are no sessions beyond a connection (a device
// reconnecting subscribes again) and no retransmission (a lost
// notification is covered by the device's timer). MQTT packets are
// decoded and encoded by mochi-mqtt's packets package.
type Broker struct {
	ln           net.Listener
	tls          *tls.Config
	log          *slog.Logger
	creds        *credCache
	maxClients   int
	maxConns     int    // sockets open at once, authenticated or not
	maxKeepalive uint16 // seconds

	mu      sync.Mutex
	preAuth map[string]int     // connections not yet authenticated, by address
	conns   map[*conn]struct{} // every open connection
	clients map[string]*conn   // authenticated connections by device id
	closed  bool
	wg      sync.WaitGroup // the accept loop and the connections' readers

	queue   chan note
	publish func(id string, payload []byte) error // the worker's sink; tests replace it
	done    chan struct{}
	worker  sync.WaitGroup

	connected    atomic.Int64
	published    atomic.Uint64
	delivered    atomic.Uint64
	dropped      atomic.Uint64
	authFailures atomic.Uint64
	dropLog      every
	storeLog     every
	refusedLog   every
	acceptLog    every

	closeOnce sync.Once
	closeErr  error
}

var _ fota.Notifier = (*Broker)(nil)

// note is one notification waiting for the worker.
type note struct {
	id      string
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
		log = slog.New(slog.DiscardHandler)
	}
	qsize := cfg.queueSize
	if qsize <= 0 {
		qsize = queueSize
	}
	keepalive := cfg.maxKeepalive
	if keepalive == 0 {
		keepalive = maxKeepalive
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("mqtt broker: listen on %s: %w", cfg.Listen, err)
	}
	if cfg.wrapListener != nil {
		ln = cfg.wrapListener(ln)
	}
	b := &Broker{
		ln:           ln,
		tls:          cfg.TLS,
		log:          log,
		creds:        newCredCache(cfg.Device, max(maxClients, 1024)),
		maxClients:   maxClients,
		maxConns:     socketLimit(maxClients+preAuthSlack, log),
		maxKeepalive: keepalive,
		conns:        make(map[*conn]struct{}),
		preAuth:      make(map[string]int),
		clients:      make(map[string]*conn),
		queue:        make(chan note, qsize),
		done:         make(chan struct{}),
	}
	b.publish = b.deliver
	b.wg.Add(1)
	go b.accept()
	b.worker.Add(1)
	go b.work()
	log.Info("mqtt broker listening", "address", ln.Addr().String(), "tls", cfg.TLS != nil, "max_clients", maxClients)
	return b, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.ln.Addr() }

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
		case b.queue <- note{id: id, payload: payload}:
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

// work drains the queue. Each write has a short deadline and a device gets
// no more notifications than it has acknowledged plus sendInflight, so one
// worker keeps up with any number of slow or dead devices.
func (b *Broker) work() {
	defer b.worker.Done()
	for {
		select {
		case <-b.done:
			return
		case nt := <-b.queue:
			if err := b.publish(nt.id, nt.payload); err != nil {
				b.dropped.Add(1)
				if b.dropLog.allow(dropLogInterval) {
					b.log.Warn("mqtt publish failed", "device_id", nt.id, "error", err)
				}
				continue
			}
			b.published.Add(1)
		}
	}
}

// deliver writes one notification to device id's connection, if it is
// connected and subscribed. A device that is not, or whose connection
// fails, is not an error: the notification is published, not delivered.
func (b *Broker) deliver(id string, payload []byte) error {
	b.mu.Lock()
	c := b.clients[id]
	b.mu.Unlock()
	if c == nil {
		return nil
	}
	sent, err := c.notify(payload)
	if err != nil {
		// Per connection, so Debug: a dead socket, or a device that does
		// not acknowledge.
		b.log.Debug("mqtt notification not delivered", "device_id", id, "error", err)
	}
	if sent {
		b.delivered.Add(1)
	}
	return nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() BrokerStats {
	return BrokerStats{
		Connected:    b.connected.Load(),
		Published:    b.published.Load(),
		Delivered:    b.delivered.Load(),
		Dropped:      b.dropped.Load(),
		AuthFailures: b.authFailures.Load(),
	}
}

// PushStats are the broker's counters for /metrics.
func (b *Broker) PushStats() fota.PushStats {
	st := b.Stats()
	return fota.PushStats{Connected: true, Devices: st.Connected, Published: st.Published, Delivered: st.Delivered, Dropped: st.Dropped}
}

// Close stops listening, disconnects every client (a DISCONNECT "server
// shutting down" for v5) and stops the worker, and waits for every
// goroutine; notifications still queued are dropped (the devices' timers
// cover them).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		b.worker.Wait()
		if err := b.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			b.closeErr = fmt.Errorf("mqtt broker: close listener: %w", err)
		}
		b.mu.Lock()
		b.closed = true
		conns := make([]*conn, 0, len(b.conns))
		for c := range b.conns {
			conns = append(conns, c)
		}
		b.mu.Unlock()
		// One deadline for all: a few dead sockets cannot make Close take
		// writeTimeout each.
		deadline := time.Now().Add(writeTimeout)
		for _, c := range conns {
			c.goodbye(codeShuttingDown, deadline)
		}
		b.wg.Wait()
	})
	return b.closeErr
}

// accept runs the listener: each connection gets its reader goroutine,
// within the bound on open sockets.
func (b *Broker) accept() {
	defer b.wg.Done()
	var wait time.Duration
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			b.mu.Lock()
			closed := b.closed
			b.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: wait and try again, as
			// net/http does, rather than stop listening for good.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			if b.acceptLog.allow(dropLogInterval) {
				b.log.Warn("mqtt accept failed; retrying", "error", err, "retry_in", wait)
			}
			time.Sleep(wait)
			continue
		}
		wait = 0
		c := newConn(b, nc)
		b.mu.Lock()
		if b.closed || len(b.conns) >= b.maxConns || b.preAuth[c.addr] >= preAuthPerAddress {
			full, perAddress := !b.closed && len(b.conns) >= b.maxConns, !b.closed && len(b.conns) < b.maxConns
			b.mu.Unlock()
			nc.Close()
			switch {
			case full && b.refusedLog.allow(dropLogInterval):
				b.log.Warn("mqtt connection refused: too many open connections", "max", b.maxConns)
			case perAddress && b.refusedLog.allow(dropLogInterval):
				b.log.Warn("mqtt connection refused: too many unauthenticated connections from one address", "address", c.addr, "max", preAuthPerAddress)
			}
			continue
		}
		b.preAuth[c.addr]++
		c.preAuth = true
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go c.serve()
	}
}

// Why register refuses a connection.
var (
	errBusy    = errors.New("too many devices connected")
	errClosing = errors.New("broker closing")
)

// register makes c the connection of its device, replacing (and
// returning) the device's previous one, unless MaxClients devices are
// connected already (errBusy) or the broker is closing (errClosing).
func (b *Broker) register(c *conn) (old *conn, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosing
	}
	old = b.clients[c.id]
	if old == nil {
		if len(b.clients) >= b.maxClients {
			return nil, errBusy
		}
		b.connected.Add(1)
	}
	b.clients[c.id] = c
	b.leavePreAuth(c)
	return old, nil
}

// leavePreAuth counts c out of its address's unauthenticated
// connections, once; b.mu is held.
func (b *Broker) leavePreAuth(c *conn) {
	if !c.preAuth {
		return
	}
	c.preAuth = false
	if n := b.preAuth[c.addr] - 1; n > 0 {
		b.preAuth[c.addr] = n
	} else {
		delete(b.preAuth, c.addr)
	}
}

// forget drops c from the broker's maps when its reader ends.
func (b *Broker) forget(c *conn) {
	b.mu.Lock()
	b.leavePreAuth(c)
	delete(b.conns, c)
	if c.id != "" && b.clients[c.id] == c {
		delete(b.clients, c.id)
		b.connected.Add(-1)
	}
	b.mu.Unlock()
	b.wg.Done()
}

// refusal is why a CONNECT is refused, with its CONNACK codes.
type refusal struct {
	reason string
	v3, v5 byte
	auth   bool // counted in AuthFailures
}

var (
	refuseCredentials = refusal{"bad user name or password", 0x04, 0x86, true}
	refuseClientID    = refusal{"client id is not the user name", 0x02, 0x85, true}
	refuseWill        = refusal{"will message not allowed", 0x05, 0x87, true}
	refuseAuthMethod  = refusal{"authentication method not supported", 0x05, 0x8C, true}
	refuseUnavailable = refusal{"device store unavailable", 0x03, 0x88, false}
	refuseBusy        = refusal{"too many devices connected", 0x03, 0x89, false}
	refuseVersion     = refusal{"unsupported protocol version", 0x01, 0x84, false}
)

// refused counts and logs a refusal. Debug only: 10,000 devices with a
// stale key would otherwise flood the log. The password is never logged.
func (b *Broker) refused(r *refusal, user, remote string, err error) {
	switch {
	case *r == refuseUnavailable:
		if b.storeLog.allow(dropLogInterval) {
			b.log.Warn("mqtt connection refused: device lookup failed", "device_id", user, "error", err)
		}
		return
	case *r == refuseBusy:
		if b.refusedLog.allow(dropLogInterval) {
			b.log.Warn("mqtt connection refused: too many devices connected", "max", b.maxClients)
		}
		return
	case r.auth:
		b.authFailures.Add(1)
	}
	if protocol.ValidDeviceID(user) {
		b.log.Debug("mqtt connection refused", "device_id", user, "reason", r.reason, "remote", remote)
	} else {
		b.log.Debug("mqtt connection refused", "reason", r.reason, "remote", remote)
	}
}

// authenticate returns nil if device user may connect with password, and
// otherwise the refusal with, for refuseUnavailable, the store's error.
func (b *Broker) authenticate(user string, password []byte) (*refusal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	want, err := b.creds.password(ctx, user)
	if err != nil {
		return &refuseUnavailable, err
	}
	// want is "" for unknown and removed devices: no password matches it,
	// and the refusal is the same as for a wrong password.
	if want == "" || subtle.ConstantTimeCompare([]byte(want), password) != 1 {
		return &refuseCredentials, nil
	}
	return nil, nil
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
