package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/logbuf"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// broker is a mosquitto of the test's own.
type broker struct {
	t    *testing.T
	bin  string
	conf string
	port int
	log  *logbuf.Buffer
	cmd  *exec.Cmd
	exit chan error
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto writes mosquitto.conf for passwd and acl (and extra lines)
// and starts mosquitto on a free loopback port.
func startMosquitto(t *testing.T, passwd, acl []byte, extra string) *broker {
	t.Helper()
	bin := testserver.Mosquitto(t)
	dir := t.TempDir()
	for name, b := range map[string][]byte{"passwd": passwd, "acl": acl} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{t: t, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), port: freePort(t), log: &logbuf.Buffer{}}
	// user: as root mosquitto would become "mosquitto", who cannot read
	// the 0600 files; as anyone else the line has no effect.
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\nuse_username_as_clientid true\npassword_file %s\nacl_file %s\npersistence false\n"+
		"log_dest stderr\nlog_type all\nuser %s\n%s",
		b.port, filepath.Join(dir, "passwd"), filepath.Join(dir, "acl"), me.Username, extra)
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("mosquitto.conf:\n%s\nmosquitto's log:\n%s", conf, b.log)
		}
	})
	b.start()
	return b
}

func (b *broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(b.cmd, b.exit)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", b.addr())
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-b.exit:
			b.cmd = nil
			b.t.Fatalf("mosquitto exited at start: %v\n%s", err, b.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto does not listen on %s after 5 s", b.addr())
		}
	}
}

func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exit:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.exit
	}
	b.cmd = nil
}

func (b *broker) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }
func (b *broker) url() string  { return "mqtt://" + b.addr() }

// device is an MQTT client as a device runs it: its id as user name and
// client id, its derived password.
type device struct {
	client paho.Client
	msgs   chan paho.Message
}

func connectDevice(b *broker, id, password string) (*device, error) {
	d := &device{msgs: make(chan paho.Message, 16)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + b.addr()).SetClientID(id).SetUsername(id).SetPassword(password).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m })
	d.client = paho.NewClient(opts)
	tok := d.client.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	b.t.Cleanup(func() { d.client.Disconnect(0) })
	return d, nil
}

// subscribe subscribes at QoS 1 and returns the broker's SUBACK code.
func (d *device) subscribe(t *testing.T, topic string) byte {
	t.Helper()
	tok := d.client.Subscribe(topic, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()[topic]
}

// next waits for the device's next message.
func (d *device) next(t *testing.T, what string) paho.Message {
	t.Helper()
	select {
	case m := <-d.msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no message within 5 s", what)
		return nil
	}
}

func deviceWithKey(t *testing.T, id string) *fota.Device {
	t.Helper()
	psk, err := protocol.NewPSK()
	if err != nil {
		t.Fatal(err)
	}
	return &fota.Device{ID: id, PSK: psk}
}

// TestExternalBroker runs the Publisher and devices against a real
// mosquitto configured with MosquittoFiles.
func TestExternalBroker(t *testing.T) {
	alice, bob, gone := deviceWithKey(t, "alice"), deviceWithKey(t, "bob"), deviceWithKey(t, "gone")
	gone.Removed = time.Now()
	server := ServerAccount{Username: "fota-server", Password: "server-password-for-the-test"}
	passwd, acl, err := MosquittoFiles([]*fota.Device{alice, bob, gone}, server)
	if err != nil {
		t.Fatal(err)
	}
	b := startMosquitto(t, passwd, acl, "")
	var logs logbuf.Buffer
	logger := slogTo(&logs)
	ctx := context.Background()

	t.Run("server refused with a wrong password", func(t *testing.T) {
		_, err := NewPublisher(ctx, PublisherConfig{URL: b.url(), Username: server.Username, Password: "wrong-password-xyz"})
		if err == nil || !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			t.Fatalf("err = %v, want not authorized", err)
		}
		if bytes.Contains([]byte(err.Error()), []byte("wrong-password-xyz")) {
			t.Errorf("error %q shows the password", err)
		}
		t.Logf("refused: %v", err)
	})
	t.Run("server refused when nothing listens", func(t *testing.T) {
		_, err := NewPublisher(ctx, PublisherConfig{URL: fmt.Sprintf("mqtt://127.0.0.1:%d", freePort(t)), Username: server.Username, Password: server.Password})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("unreachable")) {
			t.Fatalf("err = %v, want unreachable", err)
		}
	})

	pub, err := NewPublisher(ctx, PublisherConfig{URL: b.url(), Username: server.Username, Password: server.Password,
		Logger: logger, maxReconnect: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	if !pub.Stats().Connected {
		t.Fatal("Stats().Connected false after NewPublisher")
	}

	devA, err := connectDevice(b, alice.ID, protocol.MQTTPassword(alice.PSK, alice.ID))
	if err != nil {
		t.Fatalf("alice connects: %v", err)
	}
	if code := devA.subscribe(t, protocol.NotifyTopic(alice.ID)); code != 1 {
		t.Fatalf("alice's SUBACK to her own topic: %#x, want QoS 1", code)
	}

	n := protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 7, SpreadMS: 1500}
	t.Run("device receives its notification", func(t *testing.T) {
		pub.Notify([]string{alice.ID}, n)
		m := devA.next(t, "alice's notification")
		if m.Topic() != protocol.NotifyTopic(alice.ID) || !bytes.Equal(m.Payload(), n.Marshal()) || m.Retained() {
			t.Fatalf("alice got %s %q retained=%v, want %s %q not retained", m.Topic(), m.Payload(), m.Retained(),
				protocol.NotifyTopic(alice.ID), n.Marshal())
		}
		if got, err := protocol.ParseNotification(m.Payload()); err != nil || got.Rollout != 7 {
			t.Fatalf("payload parses to %+v, %v", got, err)
		}
		waitFor(t, "Published == 1", func() bool { return pub.Stats().Published == 1 })
	})

	t.Run("wrong password and removed device refused", func(t *testing.T) {
		for _, tc := range []struct{ id, password string }{
			{alice.ID, protocol.MQTTPassword(bob.PSK, alice.ID)},
			{alice.ID, ""},
			{gone.ID, protocol.MQTTPassword(gone.PSK, gone.ID)},
			{server.Username + "x", server.Password},
		} {
			_, err := connectDevice(b, tc.id, tc.password)
			if !errors.Is(err, packets.ErrorRefusedNotAuthorised) && !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
				t.Errorf("%s: connect err = %v, want not authorized", tc.id, err)
			}
		}
	})

	devB, err := connectDevice(b, bob.ID, protocol.MQTTPassword(bob.PSK, bob.ID))
	if err != nil {
		t.Fatalf("bob connects: %v", err)
	}
	devB.subscribe(t, protocol.NotifyTopic(bob.ID))

	t.Run("device hears nothing on another device's topic", func(t *testing.T) {
		// Mosquitto 2.0 grants the SUBSCRIBE (it does not check
		// subscriptions against the ACL) but withholds every message.
		code := devB.subscribe(t, protocol.NotifyTopic(alice.ID))
		t.Logf("bob's SUBACK to alice's topic: %#x", code)
		devB.subscribe(t, protocol.NotifyTopicPrefix+"+"+protocol.NotifyTopicSuffix)
		devB.subscribe(t, "#")
		// One publisher connection, one subscriber connection: the
		// broker delivers in order, so bob's own notification, published
		// after alice's, arriving first proves alice's was withheld.
		pub.Notify([]string{alice.ID}, protocol.Notification{Reason: protocol.NotifyPaused})
		pub.Notify([]string{bob.ID}, protocol.Notification{Reason: protocol.NotifyHalted})
		devA.next(t, "alice's notification")
		m := devB.next(t, "bob's notification")
		if m.Topic() != protocol.NotifyTopic(bob.ID) {
			t.Fatalf("bob received %s %q: another device's notification", m.Topic(), m.Payload())
		}
		// A wildcard subscription matching his own topic as well may
		// deliver bob's notification once per subscription; nothing else.
		for len(devB.msgs) > 0 {
			if m := <-devB.msgs; m.Topic() != protocol.NotifyTopic(bob.ID) {
				t.Fatalf("bob received %s %q", m.Topic(), m.Payload())
			}
		}
	})

	t.Run("device cannot publish on another device's topic", func(t *testing.T) {
		forged := protocol.Notification{Reason: "forged-by-bob"}.Marshal()
		for _, topic := range []string{protocol.NotifyTopic(alice.ID), protocol.NotifyTopic(bob.ID)} {
			// Mosquitto acknowledges a denied QoS 1 publish (MQTT 3.1.1 has
			// no way to refuse one) and drops it.
			tok := devB.client.Publish(topic, 1, false, forged)
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("bob's publish: %v", tok.Error())
			}
		}
		// The broker had handled bob's publishes when it acknowledged them,
		// so had it routed them, they would reach alice and bob before this.
		marker := protocol.Notification{Reason: protocol.NotifyAborted}
		pub.Notify([]string{alice.ID, bob.ID}, marker)
		for _, d := range []*device{devA, devB} {
			m := d.next(t, "the server's notification")
			if !bytes.Equal(m.Payload(), marker.Marshal()) {
				t.Fatalf("received %s %q before the server's notification", m.Topic(), m.Payload())
			}
		}
	})

	t.Run("device cannot take over another device's connection", func(t *testing.T) {
		// Bob logs in with his own password but alice's client id: with
		// use_username_as_clientid mosquitto makes it "bob" (without it,
		// alice's connection would be closed in favour of his).
		opts := paho.NewClientOptions().AddBroker("tcp://" + b.addr()).SetClientID(alice.ID).SetUsername(bob.ID).
			SetPassword(protocol.MQTTPassword(bob.PSK, bob.ID)).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		intruder := paho.NewClient(opts)
		if tok := intruder.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			defer intruder.Disconnect(0)
		}
		marker := protocol.Notification{Reason: protocol.NotifyPinned}
		pub.Notify([]string{alice.ID}, marker)
		if m := devA.next(t, "alice's notification after the attempt"); !bytes.Equal(m.Payload(), marker.Marshal()) {
			t.Fatalf("alice received %q", m.Payload())
		}
		if !devA.client.IsConnectionOpen() {
			t.Fatal("alice's connection was closed by another device using her client id")
		}
	})

	t.Run("publisher reconnects after a broker restart", func(t *testing.T) {
		// Drain the duplicate deliveries bob's overlapping subscriptions made.
		for len(devB.msgs) > 0 {
			<-devB.msgs
		}
		b.stop()
		waitFor(t, "Connected == false", func() bool { return !pub.Stats().Connected })
		b.start()
		waitFor(t, "Connected == true", func() bool { return pub.Stats().Connected })
		devA2, err := connectDevice(b, alice.ID, protocol.MQTTPassword(alice.PSK, alice.ID))
		if err != nil {
			t.Fatalf("alice reconnects: %v", err)
		}
		devA2.subscribe(t, protocol.NotifyTopic(alice.ID))
		before := pub.Stats().Published
		again := protocol.Notification{Reason: protocol.NotifyPinned}
		pub.Notify([]string{alice.ID}, again)
		if m := devA2.next(t, "alice's notification after the restart"); !bytes.Equal(m.Payload(), again.Marshal()) {
			t.Fatalf("alice got %q, want %q", m.Payload(), again.Marshal())
		}
		waitFor(t, "one more Published", func() bool { return pub.Stats().Published == before+1 })
	})

	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains([]byte(logs.String()), []byte(server.Password)) {
		t.Errorf("the publisher's log shows the server's password:\n%s", logs.String())
	}
	if s := pub.Stats(); s.Dropped != 0 || s.Connected {
		t.Errorf("after Close: %+v, want nothing dropped and not connected", s)
	}
}

// TestPublisherDrops shows Notify never blocks: with the broker gone, a
// full queue drops what does not fit, and after MaxOutage everything.
func TestPublisherDrops(t *testing.T) {
	alice := deviceWithKey(t, "alice")
	server := ServerAccount{Username: "fota-server", Password: "server-password-for-the-test"}
	passwd, acl, err := MosquittoFiles([]*fota.Device{alice}, server)
	if err != nil {
		t.Fatal(err)
	}
	b := startMosquitto(t, passwd, acl, "")
	pub, err := NewPublisher(context.Background(), PublisherConfig{URL: b.url(), Username: server.Username, Password: server.Password,
		QueueSize: 4, MaxOutage: 300 * time.Millisecond, maxReconnect: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	b.stop()
	waitFor(t, "Connected == false", func() bool { return !pub.Stats().Connected })

	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%d", i)
	}
	start := time.Now()
	pub.Notify(ids, protocol.Notification{Reason: protocol.NotifyRollout})
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Notify took %v with the broker gone", d)
	}
	// The queue holds 4 and the worker one more, waiting for the broker.
	if s := pub.Stats(); s.Dropped < 95 || s.Published != 0 {
		t.Fatalf("after 100 notifications into a queue of 4: %+v, want at least 95 dropped", s)
	}
	// Past MaxOutage the waiting ones are dropped too, and new ones at once.
	waitFor(t, "all 100 dropped", func() bool { return pub.Stats().Dropped == 100 })
	pub.Notify(ids[:3], protocol.Notification{Reason: protocol.NotifyRollout})
	if s := pub.Stats(); s.Dropped != 103 {
		t.Fatalf("after the outage limit: %+v, want 103 dropped", s)
	}
	closed := time.Now()
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(closed); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	pub.Notify(ids[:1], protocol.Notification{}) // after Close: counted, no panic
	if s := pub.Stats(); s.Dropped != 104 {
		t.Fatalf("after Close: %+v, want 104 dropped", s)
	}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
