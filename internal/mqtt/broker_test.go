package mqtt

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/logbuf"
	"github.com/ecowatt/fota/protocol"
)

// fleet is the tests' device store: a map, looked up as the real store is.
type fleet struct {
	mu      sync.Mutex
	devices map[string]*fota.Device
	calls   atomic.Int64
}

// testPSK derives a device's key from its id, so a helper process can
// compute the same passwords.
func testPSK(id string) protocol.PSK { return protocol.PSK(sha256.Sum256([]byte("test psk " + id))) }

func newFleet(ids ...string) *fleet {
	f := &fleet{devices: make(map[string]*fota.Device)}
	for _, id := range ids {
		f.devices[id] = &fota.Device{ID: id, PSK: testPSK(id)}
	}
	return f
}

func (f *fleet) Device(_ context.Context, id string) (*fota.Device, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[id]
	if !ok {
		return nil, fota.Errorf(fota.ENOTFOUND, "device %s not found", id)
	}
	c := *d
	return &c, nil
}

func password(id string) []byte { return []byte(protocol.MQTTPassword(testPSK(id), id)) }

func startBroker(t testing.TB, f *fleet, edit func(*BrokerConfig)) *Broker {
	t.Helper()
	cfg := BrokerConfig{Listen: "127.0.0.1:0", Device: f.Device}
	if edit != nil {
		edit(&cfg)
	}
	b, err := NewBroker(cfg)
	if err != nil {
		t.Fatalf("NewBroker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// online connects device id with protocol version v and subscribes it to
// its own topic.
func online(t *testing.T, b *Broker, id string, v byte) *rawClient {
	t.Helper()
	rc, err := dialRaw(b.Addr().String(), nil, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	code, err := rc.connect(connectPacket(id, id, password(id)))
	if err != nil || code != 0 {
		t.Fatalf("connect %s (v%d): code %#x, %v", id, v, code, err)
	}
	codes, err := rc.subscribe(1, protocol.NotifyTopic(id))
	if err != nil || len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("subscribe %s: codes %v, %v", id, codes, err)
	}
	return rc
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectNotification reads rc's next PUBLISH and checks it is n on id's
// topic.
func expectNotification(t *testing.T, rc *rawClient, id string, n protocol.Notification) {
	t.Helper()
	pk, err := rc.nextPublish(5 * time.Second)
	if err != nil {
		t.Fatalf("%s: read notification: %v", id, err)
	}
	if pk.TopicName != protocol.NotifyTopic(id) {
		t.Fatalf("%s: notification on %q, want %q", id, pk.TopicName, protocol.NotifyTopic(id))
	}
	if !bytes.Equal(pk.Payload, n.Marshal()) {
		t.Fatalf("%s: payload %q, want %q", id, pk.Payload, n.Marshal())
	}
	if pk.FixedHeader.Qos != 1 || pk.FixedHeader.Retain {
		t.Fatalf("%s: qos %d retain %v, want qos 1 not retained", id, pk.FixedHeader.Qos, pk.FixedHeader.Retain)
	}
}

func TestNotifyReachesDevice311(t *testing.T) {
	f := newFleet("dev-1", "dev-2")
	b := startBroker(t, f, nil)

	opts := paho.NewClientOptions().
		AddBroker("tcp://" + b.Addr().String()).
		SetClientID("dev-1").
		SetUsername("dev-1").
		SetPassword(string(password("dev-1"))).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	got := make(chan paho.Message, 4)
	tok := c.Subscribe(protocol.NotifyTopic("dev-1"), 1, func(_ paho.Client, m paho.Message) { got <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if codes := tok.(*paho.SubscribeToken).Result(); codes[protocol.NotifyTopic("dev-1")] != 1 {
		t.Fatalf("SUBACK %v, want QoS 1 granted", codes)
	}
	waitFor(t, "one device connected", func() bool { return b.Stats().Connected == 1 })

	n := protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 7, SpreadMS: 3000}
	b.Notify([]string{"dev-1", "dev-2"}, n) // dev-2 is offline: not notified, not an error
	select {
	case m := <-got:
		if m.Topic() != protocol.NotifyTopic("dev-1") || m.Qos() != 1 || m.Retained() {
			t.Fatalf("message on %q qos %d retained %v", m.Topic(), m.Qos(), m.Retained())
		}
		parsed, err := protocol.ParseNotification(m.Payload())
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Reason != protocol.NotifyRollout || parsed.Rollout != 7 || parsed.Spread() != 3*time.Second {
			t.Fatalf("notification %+v", parsed)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	// Counted once the write returns, which may be after paho has it.
	waitFor(t, "both published, one delivered", func() bool { s := b.Stats(); return s.Published == 2 && s.Delivered == 1 })
	if s := b.Stats(); s.Delivered != 1 || s.Dropped != 0 {
		t.Fatalf("stats %+v, want 1 delivered (dev-2 offline), none dropped", s)
	}
}

func TestNotifyReachesDeviceV5(t *testing.T) {
	f := newFleet("dev-5")
	b := startBroker(t, f, nil)
	rc := online(t, b, "dev-5", 5)
	n := protocol.Notification{Reason: protocol.NotifyPinned}
	b.Notify([]string{"dev-5"}, n)
	expectNotification(t, rc, "dev-5", n)
	// A second one too: the first was acknowledged.
	n2 := protocol.Notification{Reason: protocol.NotifyHalted, Rollout: 3}
	b.Notify([]string{"dev-5"}, n2)
	expectNotification(t, rc, "dev-5", n2)
}

func TestConnectRefused(t *testing.T) {
	f := newFleet("dev-a", "dev-b", "dev-gone")
	f.devices["dev-gone"].Removed = time.Now()
	var logs logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := startBroker(t, f, func(c *BrokerConfig) { c.Logger = logger })

	wrong := []byte(protocol.MQTTPassword(testPSK("other"), "dev-a"))
	will := connectPacket("dev-a", "dev-a", password("dev-a"))
	will.Connect.WillFlag = true
	will.Connect.WillTopic = protocol.NotifyTopic("dev-b")
	will.Connect.WillPayload = []byte(`{"v":1,"reason":"rollout"}`)
	cases := []struct {
		name   string
		pk     packets.Packet
		v3, v5 byte
	}{
		{"wrong password", connectPacket("dev-a", "dev-a", wrong), 0x04, 0x86},
		{"another device's password", connectPacket("dev-a", "dev-a", password("dev-b")), 0x04, 0x86},
		{"no password", connectPacket("dev-a", "dev-a", nil), 0x04, 0x86},
		{"unknown device", connectPacket("dev-x", "dev-x", password("dev-x")), 0x04, 0x86},
		{"removed device", connectPacket("dev-gone", "dev-gone", password("dev-gone")), 0x04, 0x86},
		{"invalid user name", connectPacket("dev/a", "dev/a", password("dev/a")), 0x04, 0x86},
		{"client id not the user name", connectPacket("dev-b", "dev-a", password("dev-a")), 0x02, 0x85},
		{"empty client id", connectPacket("", "dev-a", password("dev-a")), 0x02, 0x85},
		{"will message", will, 0x05, 0x87},
	}
	var refused uint64
	for _, tc := range cases {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/v%d", tc.name, v), func(t *testing.T) {
				rc, err := dialRaw(b.Addr().String(), nil, v)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				code, err := rc.connect(tc.pk)
				if err != nil {
					t.Fatal(err)
				}
				want := tc.v3
				if v == 5 {
					want = tc.v5
				}
				if code != want {
					t.Fatalf("CONNACK %#x, want %#x", code, want)
				}
				if _, err := rc.read(5 * time.Second); !errors.Is(err, io.EOF) {
					t.Fatalf("after a refusal: %v, want the connection closed", err)
				}
			})
			refused++
		}
	}
	if s := b.Stats(); s.AuthFailures != refused || s.Connected != 0 {
		t.Fatalf("stats %+v, want %d auth failures and none connected", s, refused)
	}
	out := logs.String()
	if !strings.Contains(out, "mqtt connection refused") {
		t.Fatalf("refusals not logged (at debug): %q", out)
	}
	for _, pw := range [][]byte{wrong, password("dev-a"), password("dev-b"), password("dev-gone")} {
		if strings.Contains(out, string(pw)) {
			t.Fatalf("a password reached the log: %q", out)
		}
	}
	// The registered device still gets in: the refusals did not poison
	// its cache entry.
	online(t, b, "dev-a", 4)
}

func TestSubscribeOnlyOwnTopic(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := newFleet("dev-a", "dev-b")
			b := startBroker(t, f, nil)
			rb := online(t, b, "dev-b", 5)
			ra, err := dialRaw(b.Addr().String(), nil, v)
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()
			if code, err := ra.connect(connectPacket("dev-a", "dev-a", password("dev-a"))); err != nil || code != 0 {
				t.Fatalf("connect: %#x %v", code, err)
			}
			filters := []string{
				protocol.NotifyTopic("dev-b"),
				protocol.NotifyTopicPrefix + "+" + protocol.NotifyTopicSuffix,
				"#",
				"fota/#",
				"$share/g/" + protocol.NotifyTopic("dev-b"),
				"$share/g/" + protocol.NotifyTopic("dev-a"),
				protocol.NotifyTopic("dev-a") + "/#",
				"$SYS/#",
				protocol.NotifyTopic("dev-a"), // its own: granted
			}
			codes, err := ra.subscribe(9, filters...)
			if err != nil {
				t.Fatal(err)
			}
			refused := byte(0x80)
			if v == 5 {
				refused = 0x87
			}
			if len(codes) != len(filters) {
				t.Fatalf("%d codes for %d filters", len(codes), len(filters))
			}
			for i, f := range filters[:len(filters)-1] {
				if codes[i] != refused {
					t.Errorf("SUBACK for %q: %#x, want %#x", f, codes[i], refused)
				}
			}
			if last := codes[len(codes)-1]; last != 1 {
				t.Errorf("SUBACK for its own topic: %#x, want 1", last)
			}

			// dev-b's notification reaches dev-b only: published in order, so
			// if dev-a got it, it would come before dev-a's own.
			nb := protocol.Notification{Reason: protocol.NotifyAborted, Rollout: 1}
			na := protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 2}
			b.Notify([]string{"dev-b"}, nb)
			b.Notify([]string{"dev-a"}, na)
			expectNotification(t, rb, "dev-b", nb)
			expectNotification(t, ra, "dev-a", na)
		})
	}
}

func TestDevicesCannotPublish(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := newFleet("dev-a", "dev-b")
			b := startBroker(t, f, nil)
			rb := online(t, b, "dev-b", 4)
			ra := online(t, b, "dev-a", v)

			forged := []byte(`{"v":1,"reason":"forged"}`)
			pub := func(qos byte, retain bool, topic string) packets.Packet {
				return packets.Packet{
					FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
					TopicName:   topic, Payload: forged, PacketID: 5,
				}
			}
			for _, pk := range []packets.Packet{
				pub(0, false, protocol.NotifyTopic("dev-b")),
				pub(0, true, protocol.NotifyTopic("dev-b")),
				pub(0, false, protocol.NotifyTopic("dev-a")), // even its own
			} {
				if err := ra.write(pk); err != nil {
					t.Fatal(err)
				}
			}
			if err := ra.ping(); err != nil { // the publishes have been processed
				t.Fatalf("QoS 0 publishes should be dropped silently: %v", err)
			}
			if err := ra.write(pub(1, true, protocol.NotifyTopic("dev-b"))); err != nil {
				t.Fatal(err)
			}
			if v == 5 {
				ack, err := ra.read(5 * time.Second)
				if err != nil || ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0x87 {
					t.Fatalf("QoS 1 publish: %+v %#x %v, want PUBACK 0x87", ack.FixedHeader, ack.ReasonCode, err)
				}
			} else {
				// 3.1.1 cannot refuse a PUBLISH: the device is disconnected
				// (mochi sends a DISCONNECT first, which 3.1.1 clients ignore).
				pk, err := ra.read(5 * time.Second)
				if err == nil && pk.FixedHeader.Type == packets.Disconnect {
					_, err = ra.read(5 * time.Second)
				}
				if !errors.Is(err, io.EOF) {
					t.Fatalf("QoS 1 publish on 3.1.1: %v, want disconnected", err)
				}
			}

			// Nothing reached dev-b, and nothing was retained for a new
			// subscriber: its next message is the server's.
			codes, err := rb.subscribe(2, protocol.NotifyTopic("dev-b"))
			if err != nil || codes[0] != 1 {
				t.Fatalf("resubscribe: %v %v", codes, err)
			}
			n := protocol.Notification{Reason: protocol.NotifyPaused}
			b.Notify([]string{"dev-b"}, n)
			expectNotification(t, rb, "dev-b", n)
			waitFor(t, "one delivered", func() bool { return b.Stats().Delivered >= 1 })
			if s := b.Stats(); s.Delivered != 1 {
				t.Fatalf("stats %+v: want exactly the server's notification delivered", s)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fota test broker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	f := newFleet("dev-tls")
	b := startBroker(t, f, func(c *BrokerConfig) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	})
	rc, err := dialRaw(b.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, 4)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer rc.Close()
	if code, err := rc.connect(connectPacket("dev-tls", "dev-tls", password("dev-tls"))); err != nil || code != 0 {
		t.Fatalf("connect over TLS: %#x %v", code, err)
	}
	if codes, err := rc.subscribe(1, protocol.NotifyTopic("dev-tls")); err != nil || codes[0] != 1 {
		t.Fatalf("subscribe over TLS: %v %v", codes, err)
	}
	n := protocol.Notification{Reason: protocol.NotifyRollout}
	b.Notify([]string{"dev-tls"}, n)
	expectNotification(t, rc, "dev-tls", n)

	// Plain MQTT to the TLS port gets nowhere.
	plain, err := dialRaw(b.Addr().String(), nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if code, err := plain.connect(connectPacket("dev-tls", "dev-tls", password("dev-tls"))); err == nil {
		t.Fatalf("plain CONNECT to the TLS listener answered %#x", code)
	}
}

func TestNotifyDropsWhenQueueFull(t *testing.T) {
	var logs logbuf.Buffer
	b := startBroker(t, newFleet(), func(c *BrokerConfig) {
		c.queueSize = 4
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	entered := make(chan string, 16)
	release := make(chan struct{})
	// Replaced before anything is queued; the queue's channel orders this
	// write before the worker's read.
	b.publish = func(id string, _ []byte) error {
		entered <- id
		<-release
		return nil
	}
	defer close(release)

	b.Notify([]string{"d0"}, protocol.Notification{Reason: protocol.NotifyRollout})
	if got := <-entered; got != "d0" {
		t.Fatalf("worker publishing %q", got)
	}
	// The worker is stuck on d0: four fill the queue, the rest must be
	// dropped without blocking.
	ids := make([]string, 14)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%d", i+1)
	}
	done := make(chan struct{})
	go func() {
		b.Notify(ids, protocol.Notification{Reason: protocol.NotifyRollout})
		b.Notify([]string{"bad/+", "#"}, protocol.Notification{Reason: protocol.NotifyRollout})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	if s := b.Stats(); s.Dropped != 12 || s.Published != 0 {
		t.Fatalf("stats %+v, want 12 dropped (10 over the queue, 2 invalid ids), none published yet", s)
	}
	if out := logs.String(); strings.Count(out, "mqtt notifications dropped") != 1 {
		t.Fatalf("want one warning for the drops (then quiet for a while), got %q", out)
	}
	for range 5 { // d0 and the four queued
		release <- struct{}{}
	}
	waitFor(t, "five published", func() bool { return b.Stats().Published == 5 })
}

func TestMaxClients(t *testing.T) {
	for _, tc := range []struct {
		v    byte
		code byte
	}{{4, 0x03}, {5, 0x89}} {
		t.Run(fmt.Sprintf("v%d", tc.v), func(t *testing.T) {
			f := newFleet("dev-1", "dev-2")
			b := startBroker(t, f, func(c *BrokerConfig) { c.MaxClients = 1 })
			online(t, b, "dev-1", 4)
			rc, err := dialRaw(b.Addr().String(), nil, tc.v)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			code, err := rc.connect(connectPacket("dev-2", "dev-2", password("dev-2")))
			if err != nil || code != tc.code {
				t.Fatalf("second client: CONNACK %#x %v, want %#x", code, err, tc.code)
			}
		})
	}
}

func TestCloseStopsListening(t *testing.T) {
	f := newFleet("dev-1", "dev-2")
	b, err := NewBroker(BrokerConfig{Listen: "127.0.0.1:0", Device: f.Device})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr().String()
	rc := online(t, b, "dev-1", 5)
	// A connection that never sends CONNECT must not hold Close up.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung")
	}
	pk, err := rc.read(5 * time.Second)
	if err == nil && (pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrServerShuttingDown.Code) {
		t.Fatalf("connected client got %+v %#x, want DISCONNECT (server shutting down)", pk.FixedHeader, pk.ReasonCode)
	}
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection after Close: %v, want EOF", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
	b.Notify([]string{"dev-1"}, protocol.Notification{Reason: protocol.NotifyRollout}) // must not block or panic
	if s := b.Stats(); s.Dropped != 1 {
		t.Fatalf("stats after Close %+v, want the notification dropped", s)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewBrokerErrors(t *testing.T) {
	f := newFleet()
	b := startBroker(t, f, nil)
	_, err := NewBroker(BrokerConfig{Listen: b.Addr().String(), Device: f.Device})
	if err == nil || !strings.Contains(err.Error(), "listen on "+b.Addr().String()) {
		t.Fatalf("address in use: %v", err)
	}
	if _, err := NewBroker(BrokerConfig{Device: f.Device}); err == nil || !strings.Contains(err.Error(), "no listen address") {
		t.Fatalf("no address: %v", err)
	}
	if _, err := NewBroker(BrokerConfig{Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "no device lookup") {
		t.Fatalf("no lookup: %v", err)
	}
}
