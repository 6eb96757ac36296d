package web

import (
	"fmt"
	"log/slog"
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
			if _, wait := l.begin("ana", "192.0.2.1"); wait == 0 {
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
	keys := limitKeys("ana", "192.0.2.1")
	for range taken {
		l.end(keys, true)
	}
	if _, wait := l.begin("ana", "198.51.100.9"); wait != signinWindow {
		t.Fatalf("ana from another network after 5 failures: wait %s, want %s", wait, signinWindow)
	}
	c.t = c.t.Add(signinWindow)
	ticket, wait := l.begin("ana", "198.51.100.9")
	if wait != 0 {
		t.Fatalf("after the window: wait %s", wait)
	}
	l.end(ticket, false) // the right password
	if _, ok := l.entries["name:ana"]; ok {
		t.Fatal("ana's failures kept after the window and a success")
	}
}

func TestLimiterKeys(t *testing.T) {
	c := &fakeClock{time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := newSigninLimiter(c.now)
	fail := func(name, addr string) time.Duration {
		ticket, wait := l.begin(name, addr)
		if wait == 0 {
			l.end(ticket, true)
		}
		return wait
	}
	// Five failures from one IPv6 /64, each from another address in it.
	for i := range signinFailures {
		if wait := fail(fmt.Sprintf("user%d", i), fmt.Sprintf("2001:db8:1:2::%x", i+1)); wait != 0 {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if _, wait := l.begin("someone", "2001:db8:1:2:ffff::1"); wait == 0 {
		t.Fatal("another address of the same /64 was not limited")
	}
	if _, wait := l.begin("someone", "2001:db8:1:3::1"); wait != 0 {
		t.Fatalf("another /64 was limited: %s", wait)
	}
	// A /48 may fail ten times a /64's budget, however many /64s it uses.
	l = newSigninLimiter(c.now)
	for i := range networkBudget {
		if wait := fail("", fmt.Sprintf("2001:db8:7:%x::1", i)); wait != 0 {
			t.Fatalf("failure %d of the /48 refused", i)
		}
	}
	if wait := fail("", "2001:db8:7:ffff::1"); wait == 0 {
		t.Fatal("a /48 past its budget was not limited")
	}
	// Names that cannot be a user's count against the address alone and
	// take no memory of their own.
	long := string(make([]byte, 60000))
	fail(long, "192.0.2.7")
	for k := range l.entries {
		if len(k) > 100 {
			t.Fatalf("a %d-byte key is kept", len(k))
		}
	}
}

func TestLimiterFull(t *testing.T) {
	c := &fakeClock{time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	l := newSigninLimiter(c.now)
	for i := 0; len(l.entries) < signinKeys; i++ {
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		ticket, wait := l.begin("", addr)
		if wait == 0 {
			l.end(ticket, true)
		}
	}
	// Full of recent failures: new addresses share an overflow budget
	// rather than being tracked at any cost, pushing out others'
	// failures, or being locked out outright.
	ticket, wait := l.begin("ana", "192.0.2.200")
	if wait != 0 {
		t.Fatalf("a new address on a full limiter: wait %s", wait)
	}
	if len(l.entries) > signinKeys+3 {
		t.Fatalf("%d entries", len(l.entries))
	}
	l.end(ticket, true)
	for i := range overflowBudget - 1 {
		ticket, wait := l.begin("", fmt.Sprintf("203.0.%d.%d", i/200, i%200))
		if wait != 0 {
			t.Fatalf("overflow attempt %d refused", i)
		}
		l.end(ticket, true)
	}
	if _, wait := l.begin("", "198.51.100.1"); wait == 0 {
		t.Fatal("the overflow budget is not limited")
	}
	// Once the failures age out, the next sweep makes room.
	c.t = c.t.Add(signinWindow + sweepEvery)
	ticket, wait = l.begin("", "192.0.2.201")
	if wait != 0 {
		t.Fatalf("after the window: wait %s", wait)
	}
	if len(l.entries) != 2 {
		t.Fatalf("%d entries after the sweep, want 2 (the address and its network)", len(l.entries))
	}
	l.end(ticket, false)
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
		"/%5Cevil.example/phish":   "/fleet",
		"/%255Cevil.example":       "/%255Cevil.example", // decodes once, to a path of this site
		"/%09/evil.example":        "/fleet",
		"/%2F%2Fevil.example":      "/evil.example", // cleaned to a path of this site
		"/devices/a%20b":           "/devices/a%20b",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestClientAddress(t *testing.T) {
	d := &Dashboard{log: slog.New(slog.DiscardHandler)}
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
	r.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.7:41234")
	if got := d.clientAddress(r); got != "203.0.113.7" {
		t.Fatalf("X-Forwarded-For with a port: %s", got)
	}
	r.Header.Set("X-Forwarded-For", "[2001:db8::1]:443")
	if got := d.clientAddress(r); got != "2001:db8::1" {
		t.Fatalf("X-Forwarded-For [v6]:port: %s", got)
	}
	r.Header.Set("X-Forwarded-For", "fe80::1%evil")
	if got := d.clientAddress(r); got != "fe80::1" {
		t.Fatalf("X-Forwarded-For with a zone: %s", got)
	}
	r.Header.Set("X-Forwarded-For", "not an address")
	if got := d.clientAddress(r); got != "192.0.2.1" {
		t.Fatalf("a bad header: %s, want the connection's address", got)
	}
}
