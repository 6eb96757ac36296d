package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// With two places, a third connection waits in the accept queue until one
// closes; while crowded, answers say Connection: close, and the server
// closes after answering.
func TestConnLimiter(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitConns(raw, 2, 0)
	release := make(chan struct{})
	var served sync.WaitGroup
	hs := &http.Server{Handler: ln.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			served.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	url := "http://" + raw.Addr().String()

	// A client each: one connection each.
	client := func() *http.Client { return &http.Client{Transport: &http.Transport{}} }
	served.Add(2)
	holders := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := client().Get(url + "/hold")
			if err == nil {
				resp.Body.Close()
			}
			holders <- err
		}()
	}
	served.Wait() // both places taken
	if n := ln.Open(); n != 2 {
		t.Fatalf("%d connections open, want 2", n)
	}
	third := make(chan *http.Response, 1)
	go func() {
		resp, err := client().Get(url + "/quick")
		if err != nil {
			t.Error(err)
		}
		third <- resp
	}()
	select {
	case <-third:
		t.Fatal("a third connection was served while two held both places")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for range 2 {
		if err := <-holders; err != nil {
			t.Fatal(err)
		}
	}
	resp := <-third
	if resp == nil {
		t.FailNow()
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("answer while crowded did not say Connection: close")
	}
	// Everyone gone: the places are free again.
	deadline := time.Now().Add(5 * time.Second)
	for ln.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ln.Open(); n != 0 {
		t.Fatalf("%d connections still counted open", n)
	}
	hs.Close()
	if err := <-done; err != http.ErrServerClosed {
		t.Fatalf("serve: %v", err)
	}
}

// Below three quarters of the places, keep-alive is honoured.
func TestConnLimiterKeepsAliveWhenQuiet(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitConns(raw, 100, 0)
	hs := &http.Server{Handler: ln.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))}
	go hs.Serve(ln)
	defer hs.Close()
	c := &http.Client{Transport: &http.Transport{}}
	for range 3 {
		resp, err := c.Get("http://" + raw.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("Connection: close with one connection of 100")
		}
	}
	if n := ln.Open(); n != 1 {
		t.Fatalf("%d connections for three requests on keep-alive, want 1", n)
	}
}

func TestConnMetrics(t *testing.T) {
	e := newEnv(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	e.srv.WatchConns(LimitConns(raw, 7, 0))
	text := e.metricsText()
	for _, want := range []string{"fota_http_connections_open 0\n", "fota_http_connections_limit 7\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// limitedServer serves "ok" (and blocks /hold until hold is closed) through
// a ConnLimiter wired as fota serve wires it.
type limitedServer struct {
	ln    *ConnLimiter
	addr  string
	hold  chan struct{}
	holds chan struct{} // one value per /hold request being served
}

// minIdle stands in for evictAfter.
func startLimited(t *testing.T, maxConns, perClient int, minIdle time.Duration) *limitedServer {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &limitedServer{ln: LimitConns(raw, maxConns, perClient), addr: raw.Addr().String(),
		hold: make(chan struct{}), holds: make(chan struct{}, maxConns)}
	s.ln.minIdle = minIdle
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		Handler: s.ln.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				s.holds <- struct{}{}
				<-s.hold
			}
			io.WriteString(w, "ok")
		})),
		ConnContext: s.ln.ConnContext, ConnState: s.ln.ConnState}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(s.ln) }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// rawConn is a client's keep-alive connection from a chosen loopback address.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialFrom(t *testing.T, from, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends a request on c and reads its answer; the deadline only keeps a
// broken server from hanging the test.
func (c *rawConn) get(path string) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: fota\r\n\r\n"); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return resp, resp.Body.Close()
}

// closedByServer reports whether the server has closed c: a read returns
// EOF or a reset within wait, rather than timing out.
func (c *rawConn) closedByServer(wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// isIdle reports whether l counts the connection from client idle.
func (l *ConnLimiter) isIdle(client net.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.idle.Front(); e != nil; e = e.Next() {
		if e.Value.(*limitedConn).RemoteAddr().String() == client.String() {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openIdle opens n keep-alive connections from one address, one after the
// other, each answered once and then left idle, in that order on the
// server too.
func openIdle(t *testing.T, s *limitedServer, from string, n int) []*rawConn {
	t.Helper()
	var conns []*rawConn
	for i := range n {
		c := dialFrom(t, from, s.addr)
		resp, err := c.get("/healthz")
		if err != nil {
			t.Fatalf("connection %d from %s: %v", i, from, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d from %s: %s", i, from, resp.Status)
		}
		// Idle on the server before the next one, so the order is known.
		waitFor(t, "the connection is idle", func() bool { return s.ln.isIdle(c.LocalAddr()) })
		conns = append(conns, c)
	}
	return conns
}

// The scenario, small: one client holds every place with idle
// keep-alive connections and opens more; the connections idle longest are
// closed to let them in, and another client's request is answered.
func TestConnLimiterClosesOldestIdle(t *testing.T) {
	const limit, over = 64, 4
	// Evicting at once: TestOldestIdle is about the age.
	s := startLimited(t, limit, 0, 0)
	hog := openIdle(t, s, "127.0.0.1", limit)
	if n := s.ln.Open(); n != limit {
		t.Fatalf("%d connections open, want %d", n, limit)
	}
	hog = append(hog, openIdle(t, s, "127.0.0.1", over)...)

	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext},
		Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatalf("another client, while one holds every place idle: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another client: %s", resp.Status)
	}

	// Each newcomer took the place of the connection idle longest.
	evicted := over + 1
	for i, hc := range hog {
		if i < evicted {
			if !hc.closedByServer(5 * time.Second) {
				t.Errorf("connection %d (of the %d idle longest) is still open", i, evicted)
			}
		} else if hc.closedByServer(10 * time.Millisecond) {
			t.Errorf("connection %d was closed; only the %d idle longest should be", i, evicted)
		}
	}
	if n := s.ln.Evicted(); n != uint64(evicted) {
		t.Errorf("%d connections evicted, want %d", n, evicted)
	}
	if n := s.ln.Open(); n > limit {
		t.Errorf("%d connections open, limit %d", n, limit)
	}
}

// One address holds at most its cap: a new connection beyond it takes the
// place of that address's own longest-idle connection, or is closed
// unanswered when all of them are busy; other addresses are served.
func TestConnLimiterPerClientCap(t *testing.T) {
	const limit, perClient = 64, 4
	// Evicting at once: this test is about the cap, TestOldestIdle about the age.
	s := startLimited(t, limit, perClient, 0)
	a := openIdle(t, s, "127.0.0.1", perClient)
	other := openIdle(t, s, "127.0.0.2", 1)[0]

	// A fifth from the same address: its own oldest idle connection goes.
	a = append(a, openIdle(t, s, "127.0.0.1", 1)...)
	if !a[0].closedByServer(5 * time.Second) {
		t.Fatal("the address's longest-idle connection is still open past its cap")
	}
	if other.closedByServer(10 * time.Millisecond) {
		t.Fatal("another address's idle connection was closed for this one's cap")
	}
	a = a[1:]

	// All four busy: a fifth is closed unanswered.
	for _, c := range a {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: fota\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	for range a {
		<-s.holds
	}
	if resp, err := dialFrom(t, "127.0.0.1", s.addr).get("/"); err == nil {
		t.Fatalf("a connection over the cap, all busy, was answered %s", resp.Status)
	}
	if n := s.ln.Refused(); n != 1 {
		t.Fatalf("%d connections refused, want 1", n)
	}
	if resp, err := other.get("/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another address while this one is at its cap: %v", err)
	}
	close(s.hold)
	for _, c := range a {
		if resp, err := http.ReadResponse(c.r, nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("held request: %v", err)
		}
		c.Close()
	}
	other.Close()
	waitFor(t, "every connection is given back", func() bool {
		s.ln.mu.Lock()
		defer s.ln.mu.Unlock()
		return s.ln.Open() == 0 && len(s.ln.clients) == 0 && s.ln.idle.Len() == 0
	})
}

// Only a connection idle at least evictAfter is closed to make room, the one
// idle longest first, of the given client if one is named.
func TestOldestIdle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	l := LimitConns(nil, 8, 0)
	l.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	conns := []*limitedConn{{client: a}, {client: b}, {client: a}}
	for i, c := range conns {
		now = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		l.ConnState(c, http.StateIdle)
	}
	now = t0.Add(evictAfter - time.Millisecond)
	if c := l.oldestIdle(netip.Addr{}); c != nil {
		t.Fatal("closed a connection idle for less than evictAfter")
	}
	now = t0.Add(evictAfter + 100*time.Millisecond)
	if c := l.oldestIdle(b); c != conns[1] {
		t.Fatalf("client b: got %v, want its only idle connection", c)
	}
	if c := l.oldestIdle(netip.Addr{}); c != conns[0] {
		t.Fatalf("any client: got %v, want the one idle longest", c)
	}
	if c := l.oldestIdle(a); c != nil {
		t.Fatal("client a's other connection has been idle only 400 ms, yet was chosen")
	}
	l.ConnState(conns[2], http.StateActive)
	now = t0.Add(time.Hour)
	if c := l.oldestIdle(netip.Addr{}); c != nil {
		t.Fatal("chose a connection that is busy again")
	}
}

func TestClientOf(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::"},
	} {
		got := clientOf(&net.TCPAddr{IP: net.ParseIP(tc.a), Port: 1234})
		if got != netip.MustParseAddr(tc.b) {
			t.Errorf("clientOf(%s) = %s, want %s", tc.a, got, tc.b)
		}
	}
	if clientOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1")}) == clientOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1")}) {
		t.Error("two /64s counted as one client")
	}
}
