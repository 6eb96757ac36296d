// The Publisher sends notifications through an external broker shared by
// several server replicas, and MosquittoFiles makes that broker's accounts
// and ACL. There the broker's accounts keep the rules the embedded broker
// enforces itself: a device logs in with its derived password and may
// read only its own topic; only the server's account may publish. The
// server's broker password is a secret like an admin token: it is never
// logged, and files holding it are written 0600.

package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

var _ fota.Notifier = (*Publisher)(nil)

// Defaults of the Publisher's limits.
const (
	// DefaultQueueSize bounds the notifications waiting to be published: a
	// rollout wave of this many devices queues whole.
	DefaultQueueSize = 65536
	// DefaultMaxOutage is how long the broker may be unreachable before
	// notifications are dropped rather than queued: by then the devices'
	// timers will have done the work.
	DefaultMaxOutage = time.Minute

	maxInflight             = 256              // QoS 1 publishes awaiting their PUBACK
	publishTimeout          = 10 * time.Second // a PUBACK later than this counts the notification as dropped
	publisherConnectTimeout = 10 * time.Second
	flushTimeout            = 2 * time.Second // Close waits no longer for the queue to drain
	maxReconnect            = 30 * time.Second
)

// PublisherConfig says how to reach the external broker.
type PublisherConfig struct {
	// URL is the broker: mqtt://host:1883 or mqtts://host:8883 (tcp://,
	// ssl:// and tls:// are accepted too). The port defaults to 1883 or
	// 8883.
	URL      string
	Username string
	Password string // never logged
	// RootCAs verify an mqtts broker's certificate; nil: the system roots.
	RootCAs *x509.CertPool
	// ClientID is the MQTT client id; "": "fota-server-" and a random
	// suffix. Replicas must differ: a broker drops the older of two
	// connections with one id.
	ClientID string
	Logger   *slog.Logger
	// QueueSize bounds the queue (default DefaultQueueSize).
	QueueSize int
	// MaxOutage is how long a lost broker connection may last before
	// notifications are dropped rather than queued (default
	// DefaultMaxOutage).
	MaxOutage time.Duration

	// maxReconnect caps paho's reconnect backoff (tests shorten it).
	maxReconnect time.Duration
}

// PublisherStats counts what the Publisher did since it started.
type PublisherStats struct {
	Published uint64 // acknowledged by the broker (PUBACK)
	Dropped   uint64 // queue full, broker away too long, refused, unacknowledged or unsent at Close
	Connected bool
}

// Publisher is a fota.Notifier that publishes notifications, QoS 1 and not
// retained, through an external broker. Notify only queues; one worker
// publishes while the broker is connected, and paho reconnects with
// backoff when the connection drops.
type Publisher struct {
	client    paho.Client
	log       *slog.Logger
	queue     chan notice
	maxOutage time.Duration

	mu     sync.RWMutex // guards closed against Notify's sends on queue
	closed bool

	link     sync.Mutex
	up       bool
	downAt   time.Time
	changed  chan struct{} // closed and replaced at each connection change
	flushBy  atomic.Pointer[time.Time]
	inflight sync.WaitGroup
	done     chan struct{} // closed when the worker has returned

	published, dropped atomic.Uint64
	// outageLog and dropLog space out the warnings of a long outage, which
	// would otherwise repeat at every reconnect attempt and notification.
	outageLog, dropLog every
}

// outageLogInterval spaces the warnings of an outage.
const outageLogInterval = 5 * time.Minute

type notice struct {
	topic   string
	payload []byte
}

// brokerAddress turns a broker URL into paho's form (tcp:// or ssl://,
// with a port) and the host name TLS verifies. The URL may not hold
// credentials: they are Username and Password, which stay out of logs.
func brokerAddress(raw string) (addr, host string, useTLS bool, err error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", "", false, fmt.Errorf("mqtt broker URL %q: want mqtt://host:1883 or mqtts://host:8883", redactURL(raw))
	}
	if u.User != nil {
		return "", "", false, fmt.Errorf("mqtt broker URL %s holds credentials: give the user name and password separately", u.Redacted())
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", false, fmt.Errorf("mqtt broker URL %s: want no path or query, only mqtt://host:port", u)
	}
	port := ""
	switch u.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port, useTLS = "8883", true
	default:
		return "", "", false, fmt.Errorf("mqtt broker URL %s: scheme %q is not mqtt:// or mqtts:// (nor tcp://, ssl://, tls://); websockets are not supported", u, u.Scheme)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	scheme := "tcp"
	if useTLS {
		scheme = "ssl"
	}
	return scheme + "://" + net.JoinHostPort(u.Hostname(), port), u.Hostname(), useTLS, nil
}

// redactURL is raw with any password hidden, for an error about a URL
// that did not parse.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if !strings.Contains(raw, "@") { // no user information to hide
		return raw
	}
	return "(unparsable)"
}

// NewPublisher connects to the broker once, so that a wrong address,
// password or certificate is reported now, and then keeps the connection,
// reconnecting with backoff.
func NewPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	addr, host, useTLS, err := brokerAddress(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientID == "" {
		var b [6]byte
		if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
			return nil, fmt.Errorf("mqtt client id: %w", err)
		}
		cfg.ClientID = "fota-server-" + hex.EncodeToString(b[:])
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxOutage <= 0 {
		cfg.MaxOutage = DefaultMaxOutage
	}
	if cfg.maxReconnect <= 0 {
		cfg.maxReconnect = maxReconnect
	}
	p := &Publisher{
		log:       cfg.Logger.With("mqtt_broker", addr, "mqtt_client_id", cfg.ClientID),
		queue:     make(chan notice, cfg.QueueSize),
		maxOutage: cfg.MaxOutage,
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	opts := paho.NewClientOptions().
		AddBroker(addr).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		// 3.1.1 only: paho would otherwise retry a refused login as 3.1
		// and report that attempt's error instead.
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetConnectTimeout(publisherConnectTimeout).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(publishTimeout).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(cfg.maxReconnect).
		SetOrderMatters(false).
		SetOnConnectHandler(func(paho.Client) { p.setUp(true, nil) }).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			if _, down, _ := p.state(); down > time.Minute && p.outageLog.allow(outageLogInterval) {
				p.log.Warn("mqtt broker still unreachable or refusing the server; devices hear of changes on their timers until it is back",
					"down_for", down.Round(time.Second))
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { p.setUp(false, err) })
	if useTLS {
		opts.SetTLSConfig(&tls.Config{RootCAs: cfg.RootCAs, ServerName: host, MinVersion: tls.VersionTLS12})
	}
	p.client = paho.NewClient(opts)

	tok := p.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		p.client.Disconnect(0)
		return nil, fmt.Errorf("connect to mqtt broker %s: %w", addr, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return nil, connectError(addr, cfg.Username, err)
	}
	p.setUp(true, nil) // paho calls the handler too, but perhaps later
	go p.work()
	return p, nil
}

// connectError says why the first connection failed in words an operator
// acts on.
func connectError(addr, user string, err error) error {
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var opErr *net.OpError
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return fmt.Errorf("mqtt broker %s refused user %q: not authorized (check the user name and password, and the broker's password file): %w", addr, user, err)
	case errors.As(err, &certErr), errors.As(err, &hostErr):
		return fmt.Errorf("mqtt broker %s: TLS certificate not trusted (give the broker's CA certificate): %w", addr, err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("mqtt broker %s unreachable (is it running, and is the address right?): %w", addr, err)
	}
	return fmt.Errorf("connect to mqtt broker %s: %w", addr, err)
}

// setUp records a connection change and wakes a worker waiting for one.
func (p *Publisher) setUp(up bool, why error) {
	p.link.Lock()
	if up == p.up {
		p.link.Unlock()
		return
	}
	p.up = up
	if !up {
		p.downAt = time.Now()
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.link.Unlock()
	if up {
		p.log.Info("mqtt broker connected")
	} else {
		p.log.Warn("mqtt broker connection lost; reconnecting", "err", why)
	}
}

// state is the connection's state: up, how long it has been down, and a
// channel closed at the next change.
func (p *Publisher) state() (up bool, down time.Duration, changed <-chan struct{}) {
	p.link.Lock()
	defer p.link.Unlock()
	if !p.up && !p.downAt.IsZero() {
		down = time.Since(p.downAt)
	}
	return p.up, down, p.changed
}

// Notify queues n for each device and returns at once. A notification that
// finds the queue full, or the broker away for longer than MaxOutage, is
// dropped and counted: the device's timer will bring it anyway.
func (p *Publisher) Notify(deviceIDs []string, n protocol.Notification) {
	payload := n.Marshal()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.dropped.Add(uint64(len(deviceIDs)))
		return
	}
	if up, down, _ := p.state(); !up && down > p.maxOutage {
		p.dropped.Add(uint64(len(deviceIDs)))
		if p.dropLog.allow(outageLogInterval) {
			p.log.Warn("mqtt broker away: notifications dropped; the devices check on their timers", "dropped", len(deviceIDs),
				"down_for", down.Round(time.Second))
		}
		return
	}
	full := 0
	for _, id := range deviceIDs {
		select {
		case p.queue <- notice{topic: protocol.NotifyTopic(id), payload: payload}:
		default:
			full++
		}
	}
	if full > 0 {
		p.dropped.Add(uint64(full))
		p.log.Warn("mqtt notification queue full: notifications dropped", "dropped", full, "queue_size", cap(p.queue))
	}
}

// work publishes the queue until Close closes it.
func (p *Publisher) work() {
	defer close(p.done)
	sem := make(chan struct{}, maxInflight)
	for nt := range p.queue {
		if !p.waitUp() {
			p.dropped.Add(1)
			continue
		}
		sem <- struct{}{}
		tok := p.client.Publish(nt.topic, 1, false, nt.payload)
		p.inflight.Add(1)
		go func() {
			defer func() { <-sem; p.inflight.Done() }()
			if !tok.WaitTimeout(publishTimeout) {
				p.dropped.Add(1)
				p.log.Warn("mqtt notification not acknowledged in time", "topic", nt.topic)
				return
			}
			if err := tok.Error(); err != nil {
				p.dropped.Add(1)
				p.log.Warn("mqtt notification not published", "topic", nt.topic, "err", err)
				return
			}
			p.published.Add(1)
		}()
	}
	p.inflight.Wait()
}

// waitUp waits for the connection, and says false when it has been down
// for longer than MaxOutage or Close's flush time is over. Publishing only
// while connected keeps the queue, not paho's unbounded store, holding
// what waits.
func (p *Publisher) waitUp() bool {
	for {
		by := p.flushBy.Load()
		if by != nil && !time.Now().Before(*by) {
			return false
		}
		up, down, changed := p.state()
		if up {
			return true
		}
		wait := p.maxOutage - down
		if by != nil {
			wait = min(wait, time.Until(*by))
		}
		if wait <= 0 {
			return false
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// Stats reports counts and the connection's state.
// PushStats are the publisher's counters for /metrics.
func (p *Publisher) PushStats() fota.PushStats {
	st := p.Stats()
	return fota.PushStats{Connected: st.Connected, Devices: -1, Published: st.Published, Dropped: st.Dropped}
}

func (p *Publisher) Stats() PublisherStats {
	up, _, _ := p.state()
	return PublisherStats{Published: p.published.Load(), Dropped: p.dropped.Load(), Connected: up}
}

// Close stops taking notifications, publishes what is queued for up to a
// couple of seconds, drops the rest, and disconnects.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	by := time.Now().Add(flushTimeout)
	p.flushBy.Store(&by)
	close(p.queue)
	p.mu.Unlock()

	// Wake a worker waiting for the connection, so it sees flushBy.
	p.link.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.link.Unlock()

	timer := time.NewTimer(time.Until(by))
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		// The worker may be blocked on a slow broker; what it still holds
		// counts as dropped when its publishes time out.
		left := len(p.queue)
		p.log.Warn("mqtt publisher closed before its queue drained", "unsent", left)
	}
	p.client.Disconnect(250)
	p.link.Lock()
	p.up = false // paho calls no handler for a disconnect asked for
	p.link.Unlock()
	s := p.Stats()
	p.log.Info("mqtt publisher closed", "published", s.Published, "dropped", s.Dropped)
	return nil
}

// LoadCAFile reads PEM CA certificates to verify an mqtts broker with.
func LoadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mqtt broker CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("mqtt broker CA file %s holds no PEM certificate (want one or more -----BEGIN CERTIFICATE----- blocks)", path)
	}
	return pool, nil
}
