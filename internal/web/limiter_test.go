package web

import (
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLimiterCountsAttemptsUnderWay(t *testing.T) {
	c := &fakeClock{time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := newSigninLimiter(c.now)
	// A burst of 200 simultaneous guesses: only five are taken up.
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := 0
	for range 200 {
		wg.Go(func() {
			if l.begin("ana", "192.0.2.1") == 0 {
				mu.Lock()
				taken++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if taken != signinFailures {
		t.Fatalf("%d of 200 simultaneous attempts taken up, want %d", taken, signinFailures)
	}
	for range taken {
		l.end("ana", "192.0.2.1", true)
	}
	if wait := l.begin("ana", "192.0.2.9"); wait != signinWindow {
		t.Fatalf("ana from another address after 5 failures: wait %s, want %s", wait, signinWindow)
	}
	c.t = c.t.Add(signinWindow)
	if wait := l.begin("ana", "192.0.2.9"); wait != 0 {
		t.Fatalf("after the window: wait %s", wait)
	}
	l.end("ana", "192.0.2.9", false) // the right password
	if _, ok := l.entries["name:ana"]; ok {
		t.Fatal("ana's failures kept after the window and a success")
	}
}

func TestLimiterKeys(t *testing.T) {
	c := &fakeClock{time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := newSigninLimiter(c.now)
	// Five failures from one IPv6 /64, each from another address in it.
	for i := range signinFailures {
		addr := fmt.Sprintf("2001:db8:1:2::%x", i+1)
		if l.begin(fmt.Sprintf("user%d", i), addr) != 0 {
			t.Fatalf("attempt %d refused", i)
		}
		l.end(fmt.Sprintf("user%d", i), addr, true)
	}
	if wait := l.begin("someone", "2001:db8:1:2:ffff::1"); wait == 0 {
		t.Fatal("another address of the same /64 was not limited")
	}
	if wait := l.begin("someone", "2001:db8:1:3::1"); wait != 0 {
		t.Fatalf("another /64 was limited: %s", wait)
	}
	// Names that cannot be a user's count against the address alone and
	// take no memory of their own.
	long := string(make([]byte, 60000))
	l.begin(long, "192.0.2.7")
	l.end(long, "192.0.2.7", true)
	for k := range l.entries {
		if len(k) > 100 {
			t.Fatalf("a %d-byte key is kept", len(k))
		}
	}
}

func TestLimiterFull(t *testing.T) {
	c := &fakeClock{time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := newSigninLimiter(c.now)
	for i := range signinKeys {
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		l.begin("", addr)
		l.end("", addr, true)
	}
	// Full of recent failures: a new address waits rather than being
	// tracked at any cost or pushing out another's failures.
	if wait := l.begin("", "192.0.2.200"); wait != fullWait {
		t.Fatalf("new address on a full limiter: wait %s, want %s", wait, fullWait)
	}
	if len(l.entries) > signinKeys {
		t.Fatalf("%d entries", len(l.entries))
	}
	// Once the failures age out, the next sweep makes room.
	c.t = c.t.Add(signinWindow + sweepEvery)
	if wait := l.begin("", "192.0.2.200"); wait != 0 {
		t.Fatalf("after the window: wait %s", wait)
	}
	if len(l.entries) != 1 {
		t.Fatalf("%d entries after the sweep, want 1", len(l.entries))
	}
}

func TestSafeNext(t *testing.T) {
	for next, want := range map[string]string{
		"/events":                  "/events",
		"/devices?labels=a%3Db":    "/devices?labels=a%3Db",
		"":                         "/fleet",
		"//evil.example/x":         "/fleet",
		"/\\evil.example":          "/fleet",
		"/../\\evil.example/phish": "/fleet",
		"/..//evil.example":        "/evil.example", // a path of this site
		"https://evil.example":     "/fleet",
		"javascript:alert(1)":      "/fleet",
		"/a/../b":                  "/b",
		"events":                   "/fleet",
		"/x\r\nSet-Cookie: a=b":    "/fleet",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestClientAddress(t *testing.T) {
	d := &Dashboard{}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.1:5555"
	r.Header.Set("X-Real-IP", "203.0.113.9")
	if got := d.clientAddress(r); got != "192.0.2.1" {
		t.Fatalf("without a configured header the client chose its address: %s", got)
	}
	d.cfg.ClientIPHeader = "X-Forwarded-For"
	r.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.7")
	if got := d.clientAddress(r); got != "203.0.113.7" {
		t.Fatalf("X-Forwarded-For: %s, want the last (the proxy's own) value", got)
	}
	r.Header.Set("X-Forwarded-For", "not an address")
	if got := d.clientAddress(r); got != "192.0.2.1" {
		t.Fatalf("a bad header: %s, want the connection's address", got)
	}
}
