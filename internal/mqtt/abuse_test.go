package mqtt

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// failingListener fails its first n Accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestAcceptSurvivesErrors: an accept error (EMFILE from a flood of
// sockets) pauses the broker's listener, and devices get in once it
// passes; it used to stop listening for good.
func TestAcceptSurvivesErrors(t *testing.T) {
	b := startBroker(t, newFleet("dev-a"), func(c *BrokerConfig) {
		c.wrapListener = func(ln net.Listener) net.Listener {
			fl := &failingListener{Listener: ln}
			fl.failures.Store(5)
			return fl
		}
	})
	rc := online(t, b, "dev-a", 4)
	n := protocol.Notification{Reason: protocol.NotifyPinned}
	b.Notify([]string{"dev-a"}, n)
	expectNotification(t, rc, "dev-a", n)
}

// TestPreAuthPerAddress: one address holding sockets without logging in
// cannot take more than preAuthPerAddress; a device from another address
// still gets in, and the address's own devices do once it lets go.
func TestPreAuthPerAddress(t *testing.T) {
	b := startBroker(t, newFleet("dev-a", "dev-b"), nil)
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range preAuthPerAddress {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "the idle sockets accepted", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.preAuth["127.0.0.1"] == preAuthPerAddress
	})
	// One more from the same address is closed unanswered.
	extra, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("socket %d from one address: read %v, want it closed", preAuthPerAddress+1, err)
	}
	// Another address is not held back.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	other, err := d.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{c: other, r: bufio.NewReaderSize(other, 256), v: 4}
	t.Cleanup(func() { rc.Close() })
	if code, err := rc.connect(connectPacket("dev-b", "dev-b", password("dev-b"))); err != nil || code != 0 {
		t.Fatalf("a device from another address: code %#x, %v", code, err)
	}
	// The flood lets go: the address's devices get in again.
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	waitFor(t, "the idle sockets gone", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.preAuth["127.0.0.1"] == 0
	})
	online(t, b, "dev-a", 4)
}

// TestNotifyDoesNotWaitForOneDevice: the one notification worker does not
// wait while a connection's writer is held (its reader answering a device
// that stopped reading); the notifications behind it go out.
func TestNotifyDoesNotWaitForOneDevice(t *testing.T) {
	b := startBroker(t, newFleet("dev-a", "dev-b"), nil)
	online(t, b, "dev-a", 4)
	rb := online(t, b, "dev-b", 4)
	b.mu.Lock()
	stuck := b.clients["dev-a"]
	b.mu.Unlock()
	stuck.wmu.Lock() // as its reader would while blocked writing
	n := protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 3}
	b.Notify([]string{"dev-a", "dev-b"}, n)
	expectNotification(t, rb, "dev-b", n)
	stuck.wmu.Unlock()
	waitFor(t, "dev-b's delivery counted", func() bool { return b.Stats().Delivered == 1 })
}
