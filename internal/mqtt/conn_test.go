package mqtt

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ecowatt/fota/protocol"
)

// expectClosed reads rc until the broker closes it; a v5 client may first
// get a DISCONNECT, whose reason code must then be want.
func expectClosed(t *testing.T, rc *rawClient, want byte) {
	t.Helper()
	pk, err := rc.read(10 * time.Second)
	if err == nil && rc.v == 5 && pk.FixedHeader.Type == packets.Disconnect {
		if pk.ReasonCode != want {
			t.Fatalf("DISCONNECT %#x, want %#x", pk.ReasonCode, want)
		}
		_, err = rc.read(10 * time.Second)
	} else if err == nil && rc.v == 5 {
		t.Fatalf("got packet type %d, want DISCONNECT %#x", pk.FixedHeader.Type, want)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("got %v (packet type %d), want the connection closed", err, pk.FixedHeader.Type)
	}
}

func TestConnackV5(t *testing.T) {
	b := startBroker(t, newFleet("dev-5"), nil)
	for _, tc := range []struct {
		name          string
		keepalive     uint16
		sessionExpiry uint32
		serverKA      bool // CONNACK carries a server keep alive of maxKeepalive
	}{
		{"keepalive 60", 60, 0, false},
		{"no keepalive", 0, 0, true},
		{"keepalive over the cap", maxKeepalive + 1, 0, true},
		{"session expiry asked", 60, 3600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := dialRaw(b.Addr().String(), nil, 5)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pk := connectPacket("dev-5", "dev-5", password("dev-5"))
			pk.Connect.Keepalive = tc.keepalive
			if tc.sessionExpiry > 0 {
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = tc.sessionExpiry, true
			}
			if err := rc.write(pk); err != nil {
				t.Fatal(err)
			}
			ack, err := rc.read(5 * time.Second)
			if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
				t.Fatalf("CONNACK %+v %#x, %v", ack.FixedHeader, ack.ReasonCode, err)
			}
			p := ack.Properties
			if ack.SessionPresent {
				t.Error("session present: no session outlives its connection")
			}
			if !p.MaximumQosFlag || p.MaximumQos != 1 {
				t.Errorf("maximum QoS %v %d, want 1", p.MaximumQosFlag, p.MaximumQos)
			}
			for name, f := range map[string]struct {
				flag bool
				v    byte
			}{
				"retain available":                  {p.RetainAvailableFlag, p.RetainAvailable},
				"wildcard subscription available":   {p.WildcardSubAvailableFlag, p.WildcardSubAvailable},
				"subscription identifier available": {p.SubIDAvailableFlag, p.SubIDAvailable},
				"shared subscription available":     {p.SharedSubAvailableFlag, p.SharedSubAvailable},
			} {
				if !f.flag || f.v != 0 {
					t.Errorf("%s: present %v value %d, want 0", name, f.flag, f.v)
				}
			}
			if p.TopicAliasMaximum != 0 || p.ReceiveMaximum != receiveMaximum || p.MaximumPacketSize != maxPacketSize {
				t.Errorf("topic alias maximum %d, receive maximum %d, maximum packet size %d; want 0, %d, %d",
					p.TopicAliasMaximum, p.ReceiveMaximum, p.MaximumPacketSize, receiveMaximum, maxPacketSize)
			}
			if p.ServerKeepAliveFlag != tc.serverKA || (tc.serverKA && p.ServerKeepAlive != maxKeepalive) {
				t.Errorf("server keep alive %v %d, want %v %d", p.ServerKeepAliveFlag, p.ServerKeepAlive, tc.serverKA, maxKeepalive)
			}
			if p.SessionExpiryIntervalFlag != (tc.sessionExpiry > 0) || p.SessionExpiryInterval != 0 {
				t.Errorf("session expiry %v %d, want it set to 0 only when asked for more", p.SessionExpiryIntervalFlag, p.SessionExpiryInterval)
			}
		})
	}
}

func TestUnsupportedProtocolVersion(t *testing.T) {
	b := startBroker(t, newFleet("dev-3"), nil)
	for _, v := range []byte{3, 6} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			rc, err := dialRaw(b.Addr().String(), nil, v)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			code, err := rc.connect(connectPacket("dev-3", "dev-3", password("dev-3")))
			if err != nil || code != 0x01 {
				t.Fatalf("CONNACK %#x %v, want 0x01 (unacceptable protocol version)", code, err)
			}
			expectClosed(t, rc, 0)
		})
	}
	if s := b.Stats(); s.AuthFailures != 0 || s.Connected != 0 {
		t.Fatalf("stats %+v: a version refusal is no auth failure", s)
	}
}

// A second connection with the same client id takes over: the first is
// closed (v5: DISCONNECT "session taken over"), the second gets the
// notifications, and the device is counted once.
func TestTakeover(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			b := startBroker(t, newFleet("dev-a"), nil)
			first := online(t, b, "dev-a", v)
			second := online(t, b, "dev-a", v)
			expectClosed(t, first, packets.ErrSessionTakenOver.Code)
			if s := b.Stats(); s.Connected != 1 {
				t.Fatalf("stats %+v, want the device connected once", s)
			}
			n := protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 9}
			b.Notify([]string{"dev-a"}, n)
			expectNotification(t, second, "dev-a", n)

			// The old connection's end does not unregister the new one.
			third := online(t, b, "dev-a", v)
			expectClosed(t, second, packets.ErrSessionTakenOver.Code)
			b.Notify([]string{"dev-a"}, n)
			expectNotification(t, third, "dev-a", n)
			// Counted once the worker's write returned, which may be after
			// the client read it.
			waitFor(t, "1 connected, 2 delivered", func() bool { s := b.Stats(); return s.Connected == 1 && s.Delivered == 2 })
		})
	}
}

// A connection silent for 1.5 × its keepalive is closed, and no
// keepalive (0) means the broker's maximum.
func TestKeepalive(t *testing.T) {
	b := startBroker(t, newFleet("dev-k"), func(c *BrokerConfig) { c.maxKeepalive = 1 })
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			rc, err := dialRaw(b.Addr().String(), nil, v)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pk := connectPacket("dev-k", "dev-k", password("dev-k"))
			pk.Connect.Keepalive = 0
			if code, err := rc.connect(pk); err != nil || code != 0 {
				t.Fatalf("connect: %#x %v", code, err)
			}
			expectClosed(t, rc, packets.ErrKeepAliveTimeout.Code)
		})
	}
}

// A device that does not acknowledge its notifications gets no more than
// sendInflight of them (or its v5 receive maximum, if lower) until it does.
func TestUnacknowledgedNotifications(t *testing.T) {
	for _, tc := range []struct {
		v          byte
		receiveMax uint16
		want       int
	}{{4, 0, sendInflight}, {5, 0, sendInflight}, {5, 2, 2}} {
		t.Run(fmt.Sprintf("v%d receive maximum %d", tc.v, tc.receiveMax), func(t *testing.T) {
			b := startBroker(t, newFleet("dev-u"), nil)
			rc, err := dialRaw(b.Addr().String(), nil, tc.v)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pk := connectPacket("dev-u", "dev-u", password("dev-u"))
			pk.Properties.ReceiveMaximum = tc.receiveMax
			if code, err := rc.connect(pk); err != nil || code != 0 {
				t.Fatalf("connect: %#x %v", code, err)
			}
			if codes, err := rc.subscribe(1, protocol.NotifyTopic("dev-u")); err != nil || codes[0] != 1 {
				t.Fatalf("subscribe: %v %v", codes, err)
			}
			n := protocol.Notification{Reason: protocol.NotifyRollout}
			const sent = 12
			for range sent {
				b.Notify([]string{"dev-u"}, n)
			}
			waitFor(t, "all published", func() bool { return b.Stats().Published == sent })
			if s := b.Stats(); s.Delivered != uint64(tc.want) {
				t.Fatalf("stats %+v, want %d delivered without acknowledgements", s, tc.want)
			}
			ids := make(map[uint16]bool)
			var first uint16
			for i := range tc.want {
				pk, err := rc.read(5 * time.Second)
				if err != nil || pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1 {
					t.Fatalf("notification %d: %+v %v", i, pk.FixedHeader, err)
				}
				if pk.PacketID == 0 || ids[pk.PacketID] {
					t.Fatalf("packet id %d: zero or repeated", pk.PacketID)
				}
				ids[pk.PacketID] = true
				if i == 0 {
					first = pk.PacketID
				}
			}
			// One acknowledgement lets one more through.
			if err := rc.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first}); err != nil {
				t.Fatal(err)
			}
			if err := rc.ping(); err != nil { // the PUBACK has been processed
				t.Fatal(err)
			}
			b.Notify([]string{"dev-u"}, n)
			expectNotification(t, rc, "dev-u", n)
			waitFor(t, "one more delivered", func() bool { return b.Stats().Delivered == uint64(tc.want)+1 })
		})
	}
}

// malformed are byte sequences a device might send after its CONNECT; each
// must close the connection (v5: after a DISCONNECT with the code) and
// leave the broker serving. They also seed FuzzConnection.
var malformed = []struct {
	name string
	v    byte
	b    []byte
	code byte // v5 DISCONNECT reason
}{
	// The decoder reads the options byte past the end of the packet.
	{"v5 SUBSCRIBE without options byte", 5, []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'}, 0x81},
	{"SUBSCRIBE with bad flags", 4, []byte{0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x01}, 0x81},
	{"SUBSCRIBE without filters", 5, []byte{0x82, 0x03, 0x00, 0x01, 0x00}, 0x82},
	{"PUBREL", 5, []byte{0x62, 0x02, 0x00, 0x01}, 0x82},
	{"second CONNECT", 5, []byte{0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x00}, 0x82},
	{"CONNACK from a client", 4, []byte{0x20, 0x02, 0x00, 0x00}, 0x82},
	{"too large", 5, []byte{0x30, 0xff, 0x07}, 0x95},
	{"length over four bytes", 5, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, 0x81},
	{"PUBLISH at QoS 3", 5, []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}, 0x82},
	{"truncated topic", 5, []byte{0x30, 0x03, 0x00, 0x09, 'a'}, 0x81},
	{"PUBLISH at QoS 2", 5, []byte{0x34, 0x06, 0x00, 0x01, 'a', 0x00, 0x01, 0x00}, 0x9B},
}

func TestMalformedPackets(t *testing.T) {
	b := startBroker(t, newFleet("dev-m"), nil)
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			rc := online(t, b, "dev-m", tc.v)
			if _, err := rc.c.Write(tc.b); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, rc, tc.code)
		})
	}
	// Before the CONNECT: anything else is closed without an answer.
	rc, err := dialRaw(b.Addr().String(), nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.ping(); !errors.Is(err, io.EOF) {
		t.Fatalf("PINGREQ before CONNECT: %v, want the connection closed", err)
	}
	online(t, b, "dev-m", 5) // still serving
	waitFor(t, "the closed ones gone", func() bool { return b.Stats().Connected == 1 })
}

// FuzzConnection sends arbitrary bytes after a CONNECT: the broker must
// not crash, and must still serve a well-behaved device afterwards.
func FuzzConnection(f *testing.F) {
	if len(malformed) == 0 {
		f.Fatal("empty seed corpus")
	}
	for _, tc := range malformed {
		f.Add(tc.v == 5, tc.b)
	}
	f.Add(false, []byte{0xc0, 0x00, 0x82, 0x0a, 0x00, 0x02}) // PINGREQ, a SUBSCRIBE cut short
	fl := newFleet("dev-f")
	b := startBroker(f, fl, nil)
	f.Fuzz(func(t *testing.T, v5 bool, data []byte) {
		v := byte(4)
		if v5 {
			v = 5
		}
		rc, err := dialRaw(b.Addr().String(), nil, v)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if code, err := rc.connect(connectPacket("dev-f", "dev-f", password("dev-f"))); err != nil || code != 0 {
			t.Fatalf("connect: %#x %v", code, err)
		}
		_, _ = rc.c.Write(data) // the broker may close before it has all
		// Once the broker has read everything it reads our EOF, and must
		// close its end: then data has been processed.
		// The broker may have closed already (ENOTCONN), which is as good.
		if err := rc.c.(*net.TCPConn).CloseWrite(); err != nil && !errors.Is(err, syscall.ENOTCONN) && !isReset(err) {
			t.Fatal(err)
		}
		_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, rc.r); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("after the data and EOF: %v, want the broker to close", err)
		}
		// And the broker still serves.
		probe := online(t, b, "dev-f", 4)
		if err := probe.ping(); err != nil {
			t.Fatal(err)
		}
		probe.Close()
	})
}

// paho, a real 3.1.1 client as the devices use, connects, subscribes and
// receives; when its connection drops it reconnects, subscribes again and
// receives again; and a second client with its id takes over.
func TestPahoReconnect(t *testing.T) {
	b := startBroker(t, newFleet("dev-p"), nil)
	network := newCutter(t, b.Addr().String())
	subscribed := make(chan struct{}, 4)
	got := make(chan paho.Message, 4)
	lost := make(chan error, 4)
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + network.addr()).
		SetClientID("dev-p").SetUsername("dev-p").SetPassword(string(password("dev-p"))).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }).
		SetOnConnectHandler(func(c paho.Client) {
			// A clean session: subscribe on every connection, as the agent does.
			go func() {
				tok := c.Subscribe(protocol.NotifyTopic("dev-p"), 1, func(_ paho.Client, m paho.Message) { got <- m })
				if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					subscribed <- struct{}{}
				}
			}()
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)

	receive := func(what string, rollout int64) {
		t.Helper()
		select {
		case <-subscribed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not subscribed", what)
		}
		b.Notify([]string{"dev-p"}, protocol.Notification{Reason: protocol.NotifyRollout, Rollout: rollout})
		select {
		case m := <-got:
			n, err := protocol.ParseNotification(m.Payload())
			if err != nil || n.Rollout != rollout {
				t.Fatalf("%s: notification %+v %v, want rollout %d", what, n, err, rollout)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no notification", what)
		}
	}
	receive("first connection", 1)

	network.cut()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("paho did not notice the dropped connection")
	}
	receive("after reconnecting", 2)
	waitFor(t, "one connection", func() bool { return b.Stats().Connected == 1 })

	// Another client with its id (a device rebooted before its old socket
	// timed out) takes over; paho is told by the close and reconnects,
	// taking over in turn.
	rc := online(t, b, "dev-p", 4)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("paho's connection was not closed by the takeover")
	}
	expectClosed(t, rc, 0) // paho's reconnection takes over again
	receive("after the takeovers", 3)
	// The worker counts a delivery once its write returned, which may be
	// after the client has read it.
	waitFor(t, "1 connected, 3 delivered", func() bool { s := b.Stats(); return s.Connected == 1 && s.Delivered == 3 })
}

// cutter is a TCP proxy to the broker whose connections a test can cut,
// as a network would: each side sees the other close.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		c.cut()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
	return c
}

func (c *cutter) addr() string { return c.ln.Addr().String() }

// cut closes every connection through the proxy.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// isReset says whether err is a connection reset: the broker may close
// with unread data (what followed a packet it refused).
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
