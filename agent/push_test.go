package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// patience bounds how long a test waits for something that should happen;
// generous, since a loaded machine under -race is slow. Nothing asserts
// how fast anything is.
const patience = 30 * time.Second

// eventually polls cond until it holds or patience runs out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", patience, what)
		}
	}
}

// pushDevice is a device on a tap that counts its check-ins, whose Run
// waits an hour between timed checks, so every check after the first is
// one a notification caused.
type pushDevice struct {
	*device
	tap *testserver.Tap
	// checkTimes are when each check began (the agent said "checking").
	mu         sync.Mutex
	checkTimes []time.Time
}

func newPushDevice(t *testing.T, minInterval time.Duration, hook func(*agent.Config)) *pushDevice {
	h := newHarness(t)
	tap := h.Tap()
	d := &pushDevice{device: newDev(h, "dev1", agent.APINative), tap: tap}
	d.configHook = func(c *agent.Config) {
		c.Server = tap.URL
		c.CheckInterval = time.Hour
		c.NotifyMinInterval = minInterval
		if hook != nil {
			hook(c)
		}
	}
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateChecking {
			d.mu.Lock()
			d.checkTimes = append(d.checkTimes, time.Now())
			d.mu.Unlock()
		}
	}
	return d
}

func (d *pushDevice) checks() int { return len(d.tap.RawChecks()) }

func (d *pushDevice) checkBegan(i int) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.checkTimes[i]
}

// run powers the device on and runs its agent until the test ends.
func (d *pushDevice) run(t *testing.T) {
	t.Helper()
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.agent.Run(ctx, func() {}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(patience):
			t.Errorf("Run did not return after its context ended")
		}
	})
}

// stays checks that the count of check-ins is still n after a while in
// which nothing should cause another.
func (d *pushDevice) stays(t *testing.T, n int, quiet time.Duration) {
	t.Helper()
	time.Sleep(quiet)
	if got := d.checks(); got != n {
		t.Fatalf("%d check-ins, want %d", got, n)
	}
}

// A notification wakes a Run waiting an hour for its next timed check.
func TestNotifyWakesRun(t *testing.T) {
	d := newPushDevice(t, 50*time.Millisecond, nil)
	d.run(t)
	eventually(t, "no first check-in", func() bool { return d.checks() == 1 })
	d.agent.Notify(protocol.Notification{V: 1, Reason: protocol.NotifyRollout})
	eventually(t, "no check-in after the notification", func() bool { return d.checks() == 2 })
	d.agent.Notify(protocol.Notification{V: 1, Reason: protocol.NotifyPinned})
	eventually(t, "no check-in after the second notification", func() bool { return d.checks() == 3 })
}

// Notifications that come sooner than NotifyMinInterval after a
// push-triggered check began are coalesced into one check, which happens
// once the interval has passed.
func TestNotifyCoalescedByMinInterval(t *testing.T) {
	const minInterval = 300 * time.Millisecond
	d := newPushDevice(t, minInterval, nil)
	d.run(t)
	eventually(t, "no first check-in", func() bool { return d.checks() == 1 })
	sent := time.Now()
	d.agent.Notify(protocol.Notification{V: 1})
	eventually(t, "no check-in after the notification", func() bool { return d.checks() == 2 })
	// The push-triggered check has begun (the server has its check-in): a
	// burst now is held back by the interval and makes one check.
	for range 20 {
		d.agent.Notify(protocol.Notification{V: 1})
	}
	eventually(t, "no check-in for the burst", func() bool { return d.checks() == 3 })
	if gap := d.checkBegan(2).Sub(sent); gap < minInterval {
		t.Fatalf("the burst's check began %v after the previous push-triggered check was asked for, sooner than the %v interval", gap, minInterval)
	}
	d.stays(t, 3, 3*minInterval)
}

// A notification that comes while a check runs causes one more check after
// it, whether the running check was timed or push-triggered.
func TestNotifyDuringCheck(t *testing.T) {
	var d *pushDevice
	var began atomic.Int32
	d = newPushDevice(t, 100*time.Millisecond, nil)
	hook := d.progressHook
	d.progressHook = func(p agent.Progress) {
		hook(p)
		// During the first check (the one at start) and the second (the
		// one that notification caused): three notifications each.
		if p.State == agent.StateChecking && began.Add(1) <= 2 {
			for range 3 {
				d.agent.Notify(protocol.Notification{V: 1})
			}
		}
	}
	d.run(t)
	eventually(t, "no check after the one notified during the first", func() bool { return d.checks() >= 2 })
	eventually(t, "no check after the one notified during the second", func() bool { return d.checks() >= 3 })
	d.stays(t, 3, 500*time.Millisecond)
}

// deviceAuth is a broker's view of one device: it accepts only the device's
// id as client id and user name with its derived password, and lets it
// read its own topic only (and publish nothing).
type deviceAuth struct {
	mochi.HookBase
	id, password string

	mu         sync.Mutex
	accepted   int
	refused    int
	subscribed []string // "filter qos"
	unclean    bool
}

func (h *deviceAuth) ID() string { return "device-auth" }

func (h *deviceAuth) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnSubscribed
}

func (h *deviceAuth) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	ok := cl.ID == h.id && string(pk.Connect.Username) == h.id && string(pk.Connect.Password) == h.password
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.accepted++
		h.unclean = h.unclean || !pk.Connect.Clean || pk.ProtocolVersion != 4
	} else {
		h.refused++
	}
	return ok
}

func (h *deviceAuth) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return !write && cl.ID == h.id && topic == protocol.NotifyTopic(h.id)
}

func (h *deviceAuth) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= 2 {
			h.subscribed = append(h.subscribed, f.Filter+" qos"+string(rune('0'+f.Qos)))
		}
	}
}

func (h *deviceAuth) counts() (accepted, refused int, subscribed []string, unclean bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.accepted, h.refused, append([]string(nil), h.subscribed...), h.unclean
}

// startBroker runs a mochi broker on addr with auth; stop closes it.
func startBroker(t *testing.T, addr string, auth *deviceAuth) (b *mochi.Server, stop func()) {
	t.Helper()
	return startBrokerTLS(t, addr, auth, nil)
}

// startBrokerTLS is startBroker, over TLS when conf is set.
func startBrokerTLS(t *testing.T, addr string, auth *deviceAuth, conf *tls.Config) (b *mochi.Server, stop func()) {
	t.Helper()
	b = mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(auth, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr, TLSConfig: conf})); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatalf("broker on %s: %v", addr, err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { b.Close() }) }
	t.Cleanup(stop)
	return b, stop
}

// The agent subscribes at a real broker with its derived credentials, even
// when the broker comes up after Run starts; a notification published on
// its topic makes it check in; when the broker restarts it reconnects,
// subscribes again, and is woken again, even by a payload it cannot parse.
func TestPushEndToEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the broker is not up yet: Run must not mind

	d := newPushDevice(t, 50*time.Millisecond, func(c *agent.Config) { c.MQTT = "mqtt://" + addr })
	auth := &deviceAuth{id: d.id, password: protocol.MQTTPassword(d.psk, d.id)}
	topic := protocol.NotifyTopic(d.id)
	d.run(t)
	eventually(t, "no check-in at start while the broker is down", func() bool { return d.checks() == 1 })
	if d.agent.PushConnected() {
		t.Fatal("push connected with no broker")
	}

	broker, stop := startBroker(t, addr, auth)
	eventually(t, "push never connected", d.agent.PushConnected)
	if err := broker.Publish(topic, protocol.Notification{V: 1, Reason: protocol.NotifyRollout}.Marshal(), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no check-in after the published notification", func() bool { return d.checks() == 2 })
	// Another device's topic is not this one's business (and not readable).
	if err := broker.Publish(protocol.NotifyTopic("dev2"), protocol.Notification{V: 1}.Marshal(), false, 1); err != nil {
		t.Fatal(err)
	}

	stop()
	eventually(t, "push still connected after the broker closed", func() bool { return !d.agent.PushConnected() })
	broker, _ = startBroker(t, addr, auth)
	eventually(t, "push never reconnected", d.agent.PushConnected)
	if err := broker.Publish(topic, []byte("check, please"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no check-in after the notification that does not parse", func() bool { return d.checks() == 3 })

	accepted, refused, subscribed, unclean := auth.counts()
	if accepted != 2 || refused != 0 || unclean {
		t.Fatalf("broker accepted %d connections and refused %d (unclean or not 3.1.1: %v), want 2 clean 3.1.1 and none refused", accepted, refused, unclean)
	}
	want := topic + " qos1"
	if len(subscribed) != 2 || subscribed[0] != want || subscribed[1] != want {
		t.Fatalf("subscriptions %q, want %q at each connect", subscribed, want)
	}
	d.stays(t, 3, 300*time.Millisecond)
}

// A device whose password is not the one derived from its key is refused
// by the broker: the hook above is not vacuous, and the agent keeps
// checking on its timer.
func TestPushWrongPasswordRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := newPushDevice(t, 50*time.Millisecond, func(c *agent.Config) { c.MQTT = "tcp://" + addr })
	var other protocol.PSK
	other[0] = 1
	auth := &deviceAuth{id: d.id, password: protocol.MQTTPassword(other, d.id)}
	startBroker(t, addr, auth)
	d.run(t)
	eventually(t, "the broker saw no attempt", func() bool { _, refused, _, _ := auth.counts(); return refused >= 1 })
	if d.agent.PushConnected() {
		t.Fatal("push connected with a wrong password")
	}
	if accepted, _, _, _ := auth.counts(); accepted != 0 {
		t.Fatalf("broker accepted %d connections", accepted)
	}
	eventually(t, "no check-in at start", func() bool { return d.checks() == 1 })
}

// selfSigned makes a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Over mqtts the agent verifies the broker with MQTTRootCAs: a broker the
// pool does not vouch for gets no connection, one it does gets the
// subscription and wakes the device.
func TestPushTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	_, otherPool := selfSigned(t)
	for _, row := range []struct {
		name  string
		roots *x509.CertPool
		ok    bool
	}{
		{"trusted", pool, true},
		{"not trusted", otherPool, false},
	} {
		t.Run(row.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			var handshakes atomic.Int32
			conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
				GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { handshakes.Add(1); return nil, nil }}
			d := newPushDevice(t, 50*time.Millisecond, func(c *agent.Config) {
				c.MQTT, c.MQTTRootCAs = "mqtts://"+addr, row.roots
			})
			auth := &deviceAuth{id: d.id, password: protocol.MQTTPassword(d.psk, d.id)}
			broker, _ := startBrokerTLS(t, addr, auth, conf)
			d.run(t)
			eventually(t, "no check-in at start", func() bool { return d.checks() == 1 })
			if !row.ok {
				// A second handshake is the agent retrying: the first failed.
				eventually(t, "the agent did not try again", func() bool { return handshakes.Load() >= 2 })
				if accepted, _, _, _ := auth.counts(); accepted != 0 || d.agent.PushConnected() {
					t.Fatalf("connected to a broker the roots do not vouch for (%d accepted)", accepted)
				}
				return
			}
			eventually(t, "push never connected over TLS", d.agent.PushConnected)
			if err := broker.Publish(protocol.NotifyTopic(d.id), protocol.Notification{V: 1}.Marshal(), false, 1); err != nil {
				t.Fatal(err)
			}
			eventually(t, "no check-in after the notification", func() bool { return d.checks() == 2 })
		})
	}
}
