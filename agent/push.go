package agent

// Push: the server publishes a notification on the device's MQTT topic when
// something concerns it, and the device checks in at once over the
// authenticated API instead of at its next timer tick. Nothing depends on
// push: the timer keeps running, and a device whose broker is down or
// unreachable checks on the timer alone.
//
// A notification is not authenticated (the broker's password only proves
// the listener, not the publisher), so all it may cause is a check: the
// device rate-limits push-triggered checks (Config.NotifyMinInterval) and
// bounds how long one may delay a check (protocol.MaxNotifySpread).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ecowatt/fota/protocol"
)

// DefaultNotifyMinInterval is how close together two push-triggered checks
// may begin unless Config says otherwise.
const DefaultNotifyMinInterval = time.Minute

// The subscriber's reconnect backoff: doubling from pushBackoffBase up to
// pushBackoffMax, each wait drawn from its upper half so that a fleet that
// lost its broker together does not come back in step.
const (
	pushBackoffBase = time.Second
	pushBackoffMax  = 2 * time.Minute
	// pushStable is how long a connection must have lasted for the backoff
	// to start again from its base: a broker that accepts and then drops
	// the device at once (another client with its id, an ACL that refuses
	// the subscription) is not hammered every second.
	pushStable = time.Minute
	// pushTimeout bounds the CONNECT and SUBSCRIBE handshakes.
	pushTimeout = 30 * time.Second
)

// broker is a parsed Config.MQTT.
type broker struct {
	tls  bool
	addr string // host:port
}

// parseBroker reads a broker URL: mqtt:// or tcp:// (plain, port 1883 by
// default), mqtts://, ssl:// or tls:// (TLS, port 8883 by default).
func parseBroker(s string) (broker, error) {
	u, err := url.Parse(s)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // the URL is in our message already
	}
	if err != nil {
		return broker{}, fmt.Errorf("MQTT broker URL %q: %w", s, err)
	}
	var b broker
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		b.tls, port = true, "8883"
	default:
		return broker{}, fmt.Errorf("MQTT broker URL %q: scheme %q, want mqtt://host:1883 or mqtts://host:8883 (tcp, ssl and tls too)", s, u.Scheme)
	}
	if u.Hostname() == "" {
		return broker{}, fmt.Errorf("MQTT broker URL %q names no host", s)
	}
	if u.User != nil {
		// The credentials are derived from the device key; a URL that
		// carries others would be silently ignored, so say so instead.
		return broker{}, fmt.Errorf("MQTT broker URL %q carries credentials: the device's user name and password are derived from its key", u.Redacted())
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return broker{}, fmt.Errorf("MQTT broker URL %q has a path or query; want only scheme://host:port", s)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	b.addr = net.JoinHostPort(u.Hostname(), port)
	return b, nil
}

// ValidateMQTT checks a broker URL as Config.MQTT takes it, so a command
// line can refuse a bad one before anything starts.
func ValidateMQTT(s string) error {
	_, err := parseBroker(s)
	return err
}

// pushState is what Notify shares with Run. Its mutex is held only for
// a few assignments, so Notify never blocks for long.
type pushState struct {
	mu sync.Mutex
	// pending: a notification came that no check begun since has served.
	pending bool
	// due: when the pending notification's spread ends (the earliest of
	// those coalesced into it).
	due    time.Time
	reason string
	// last: when the previous push-triggered check began.
	last time.Time
	// interrupt ends Run's current wait; nil while Run is not waiting.
	interrupt context.CancelFunc

	connected atomic.Bool
	lastErr   atomic.Pointer[string] // why the last attempt failed; nil once connected
}

// Notify tells the agent that the server published a notification for the
// device: Run checks for updates after a random delay within n.Spread(),
// but not sooner than Config.NotifyMinInterval after the previous
// push-triggered check began. Notifications that come before then are
// coalesced into that one check; one that comes during a check causes one
// more check after it. Safe from any goroutine; it never blocks. The MQTT
// subscriber calls it; so may a program that learns of notifications
// another way.
func (a *Agent) Notify(n protocol.Notification) {
	var delay time.Duration
	if s := n.Spread(); s > 0 {
		delay = rand.N(s) // [0, s): a fleet woken together arrives spread out
	}
	at := time.Now().Add(delay)
	p := &a.push
	p.mu.Lock()
	if !p.pending || at.Before(p.due) {
		p.due = at
	}
	p.pending, p.reason = true, n.Reason
	wake := p.interrupt
	p.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// PushConnected reports whether the MQTT subscriber is connected to the
// broker and subscribed to the device's topic.
func (a *Agent) PushConnected() bool { return a.push.connected.Load() }

// PushError is why push is not connected now ("" while it is, or before
// its first attempt), for whoever runs the device to see.
func (a *Agent) PushError() string {
	if p := a.push.lastErr.Load(); p != nil && !a.push.connected.Load() {
		return *p
	}
	return ""
}

// pushDue is when a pending notification's check may begin: when its
// spread ends, but not sooner than minInterval after the previous
// push-triggered check began (last; zero if there was none).
func pushDue(due, last time.Time, minInterval time.Duration) time.Time {
	if !last.IsZero() {
		if earliest := last.Add(minInterval); earliest.After(due) {
			return earliest
		}
	}
	return due
}

// beginCheck records that a check begins: any notification so far is
// served by it (the check sees whatever the server had when it was sent).
// pushed says the check is the one a notification asked for.
func (a *Agent) beginCheck(pushed bool) {
	p := &a.push
	p.mu.Lock()
	reason := p.reason
	p.pending, p.reason = false, ""
	if pushed {
		p.last = time.Now()
	}
	p.mu.Unlock()
	if pushed {
		a.log.Info("checking for updates: notified", "reason", reason)
	}
}

// wait waits d, the time to the next timed check, or less when a
// notification's check comes due first; pushed says which. Sleep (which
// tests replace) does the waiting, under a context a notification cancels:
// then the wait is worked out again with what is left of d. It returns an
// error when ctx ends or Sleep fails on its own.
func (a *Agent) wait(ctx context.Context, d time.Duration) (pushed bool, err error) {
	deadline := time.Now().Add(d)
	p := &a.push
	for {
		wctx, cancel := context.WithCancel(ctx)
		p.mu.Lock()
		p.interrupt = cancel
		pending, due, last := p.pending, p.due, p.last
		p.mu.Unlock()
		sleep, pushed := d, false
		if pending {
			if in := time.Until(pushDue(due, last, a.cfg.NotifyMinInterval)); in < sleep {
				sleep, pushed = max(in, 0), true
			}
		}
		err := a.cfg.Sleep(wctx, sleep)
		p.mu.Lock()
		p.interrupt = nil
		p.mu.Unlock()
		woken := wctx.Err() != nil // before cancel: only a notification or ctx can have ended it
		cancel()
		switch {
		case ctx.Err() != nil:
			return false, ctx.Err()
		case err == nil:
			return pushed, nil
		case !woken:
			return false, err
		}
		d = max(time.Until(deadline), 0)
	}
}

// startPush runs the MQTT subscriber until the returned stop is called;
// stop returns once the client is disconnected.
func (a *Agent) startPush(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.subscribe(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// subscribe keeps a connection to the broker, subscribed to the device's
// topic, until ctx ends. It reconnects itself rather than through paho's
// auto-reconnect: paho's backoff has no jitter, and a fresh client per
// connection makes "resubscribe on every connect" hold by construction
// (the session is clean, so the broker forgets subscriptions anyway).
func (a *Agent) subscribe(ctx context.Context) {
	log := a.log.With("broker", a.cfg.MQTT)
	failures := 0
	for {
		// Ending ctx in the middle of a dial or a handshake closes the
		// connection rather than waiting out their timeouts; once
		// connected, the client is disconnected politely instead.
		attemptCtx, closeConn := context.WithCancel(context.Background())
		stopClosing := context.AfterFunc(ctx, closeConn)
		c, lost := a.pushClient(attemptCtx)
		up, err := a.connectPush(ctx, c)
		if err == nil && stopClosing() {
			a.push.lastErr.Store(nil)
			a.push.connected.Store(true)
			if failures > 0 {
				log.Info("push notifications: connected and subscribed again")
			} else {
				log.Info("push notifications: connected and subscribed")
			}
			select {
			case <-ctx.Done():
			case err = <-lost:
			}
			a.push.connected.Store(false)
			if err != nil {
				why := "connection lost: " + err.Error()
				a.push.lastErr.Store(&why)
			}
			if ctx.Err() == nil {
				log.Warn("push notifications: connection lost; checking on the timer until it is back", "error", err)
			}
			if time.Since(up) >= pushStable {
				failures = 0
			}
		} else if ctx.Err() == nil {
			if err != nil {
				why := err.Error()
				a.push.lastErr.Store(&why)
			}
			if failures == 0 {
				log.Warn("push notifications: cannot connect; checking on the timer, retrying in the background", "error", err)
			} else {
				log.Debug("push notifications: still cannot connect", "error", err, "attempt", failures+1)
			}
		}
		if c.IsConnectionOpen() {
			c.Disconnect(250)
		}
		stopClosing()
		closeConn()
		if ctx.Err() != nil {
			return
		}
		if sleep(ctx, pushBackoff(failures, rand.N[time.Duration])) != nil {
			return
		}
		failures++
	}
}

// pushBackoff is the wait before reconnect attempt failures+1: the base
// doubled per failure, capped, drawn from its upper half by rnd (which
// returns a value in [0, n)).
func pushBackoff(failures int, rnd func(n time.Duration) time.Duration) time.Duration {
	d := pushBackoffMax
	if failures < 20 {
		d = min(pushBackoffBase<<failures, pushBackoffMax)
	}
	return d/2 + rnd(d/2+1)
}

// pushClient makes a client for one connection, dialled under attemptCtx
// (whose end also closes the connection). lost receives the error of a
// connection the broker or network ended.
func (a *Agent) pushClient(attemptCtx context.Context) (mqtt.Client, <-chan error) {
	b := a.broker
	lost := make(chan error, 1)
	var tlsConf *tls.Config
	if b.tls {
		tlsConf = &tls.Config{RootCAs: a.cfg.MQTTRootCAs, MinVersion: tls.VersionTLS12}
	}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + b.addr). // the dial is ours (below); paho only needs a server listed
		SetProtocolVersion(4).        // MQTT 3.1.1
		SetClientID(a.cfg.DeviceID).
		SetUsername(a.cfg.DeviceID).
		SetPassword(protocol.MQTTPassword(a.cfg.PSK, a.cfg.DeviceID)).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(pushTimeout).
		SetKeepAlive(60 * time.Second).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			conn, err := dialBroker(attemptCtx, b, tlsConf)
			if err != nil {
				return nil, err
			}
			context.AfterFunc(attemptCtx, func() { conn.Close() })
			return conn, nil
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		}).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			// Only the device's own topic is subscribed; anything else the
			// broker sends is not for this device.
			a.log.Debug("push notifications: message on another topic ignored", "topic", m.Topic())
		})
	return mqtt.NewClient(opts), lost
}

// dialBroker opens the network connection to the broker, under ctx.
func dialBroker(ctx context.Context, b broker, tlsConf *tls.Config) (net.Conn, error) {
	nd := &net.Dialer{Timeout: pushTimeout, KeepAlive: 30 * time.Second}
	if tlsConf == nil {
		return nd.DialContext(ctx, "tcp", b.addr)
	}
	return (&tls.Dialer{NetDialer: nd, Config: tlsConf}).DialContext(ctx, "tcp", b.addr)
}

// connectPush connects c and subscribes to the device's topic with QoS 1,
// returning when it was connected.
func (a *Agent) connectPush(ctx context.Context, c mqtt.Client) (time.Time, error) {
	if err := waitToken(ctx, c.Connect()); err != nil {
		return time.Time{}, fmt.Errorf("connect: %w", err)
	}
	up := time.Now()
	topic := protocol.NotifyTopic(a.cfg.DeviceID)
	tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { a.notified(m.Payload()) })
	if err := waitToken(ctx, tok); err != nil {
		return up, fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code, found := st.Result()[topic]; found && code > 2 {
			return up, fmt.Errorf("subscribe to %s: the broker refused it (code %#x): does its ACL let device %s read its own topic?", topic, code, a.cfg.DeviceID)
		}
	}
	return up, nil
}

// waitToken waits for t, or for ctx to end (the caller then closes the
// connection, which ends t).
func waitToken(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(pushTimeout + 5*time.Second):
		// paho's own timeouts should have ended it first.
		return errors.New("no answer from the broker")
	}
}

// notified handles a message on the device's topic. Any message there is a
// wake, even one that does not parse: the topic is the device's alone,
// what a notification says beyond "check" is only a hint, and a device
// should not miss an update because a newer server's payload grew a field
// it cannot read. A forged one costs no more than a rate-limited check.
func (a *Agent) notified(payload []byte) {
	n, err := protocol.ParseNotification(payload)
	if err != nil {
		a.log.Debug("push notification did not parse; checking anyway", "error", err)
		n = protocol.Notification{V: 1}
	} else {
		a.log.Debug("push notification", "reason", n.Reason, "rollout", n.Rollout, "spread", n.Spread())
	}
	a.Notify(n)
}
