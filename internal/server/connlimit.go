package server

import (
	"container/list"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimiter is a listener that holds at most a set number of connections open at
// once. Each open connection costs net/http a goroutine and 8 KiB of
// buffers for as long as it lives, so this bounds the server's memory
// however many devices arrive together.
//
// A keep-alive connection between requests (idle) must not keep others
// out: when every place is taken and a new connection waits, the connection
// idle longest is closed to make room (see evictAfter). One client address
// may hold at most a set number of connections; a connection beyond that
// closes that client's own longest-idle connection, or is closed unanswered
// when none of its connections is idle. Its Handler turns keep-alive off
// while the server is crowded, so that busy connections also give their
// places to devices waiting to connect.
type ConnLimiter struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	open      atomic.Int64
	crowded   int64
	perClient int           // most connections from one client; 0: no cap
	minIdle   time.Duration // idle at least this long before it may be closed
	now       func() time.Time

	mu      sync.Mutex
	idle    list.List // of *limitedConn, longest idle first
	clients map[netip.Addr]int
	idled   chan struct{} // a connection became idle (buffered 1)

	evicted, refused atomic.Uint64
}

// evictAfter is how long a connection must have been idle before it is
// closed to make room. Closing it races the client's next request on it,
// which then fails: a device in the middle of an update pauses between its
// requests, and under overload its requests are late (the 10,000 slow
// devices of docs/PERFORMANCE.md: with 500 ms, 2,220 of them failed; with
// 2 s, 398; 38 without eviction). A connection idle 10 s is not in use.
// One client cannot fill the server anyway (the per-client cap), so this
// delay only matters when many addresses do, or the cap is off.
const evictAfter = 10 * time.Second

// DefaultMaxConnsPerClient is fota serve's --max-conns-per-client: enough
// for a site or a carrier-grade NAT with many devices behind one address,
// a sixth of the default --max-conns.
const DefaultMaxConnsPerClient = 256

// LimitConns limits ln to maxConns open connections (at least 1), at most
// perClient of them from one client address (0: no cap). An IPv6 client is
// its /64, which one host usually has to itself.
func LimitConns(ln net.Listener, maxConns, perClient int) *ConnLimiter {
	limit := max(maxConns, 1)
	return &ConnLimiter{Listener: ln, slots: make(chan struct{}, limit), closed: make(chan struct{}),
		crowded: int64(max(limit*3/4, 1)), perClient: max(perClient, 0), minIdle: evictAfter, now: time.Now,
		clients: make(map[netip.Addr]int), idled: make(chan struct{}, 1)}
}

// Accept accepts the next connection the client cap allows, then waits for
// a free place, closing idle connections to make one.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, limiter: l, client: clientOf(c.RemoteAddr())}
		if !l.admit(lc) {
			// Closed before a byte is read: no goroutine, no buffers and no
			// place spent on a client that already holds its share.
			l.refused.Add(1)
			c.Close()
			continue
		}
		if err := l.place(); err != nil {
			lc.Close()
			return nil, err
		}
		lc.placed = true
		l.open.Add(1)
		return lc, nil
	}
}

// admit counts c against its client's cap, first closing that client's
// longest-idle connection if the cap is reached; false if it cannot.
func (l *ConnLimiter) admit(c *limitedConn) bool {
	l.mu.Lock()
	if l.perClient > 0 && l.clients[c.client] >= l.perClient {
		victim := l.oldestIdle(c.client)
		l.mu.Unlock()
		if victim == nil {
			return false
		}
		l.evicted.Add(1)
		victim.Close()
		l.mu.Lock()
	}
	l.clients[c.client]++
	c.counted = true
	l.mu.Unlock()
	return true
}

// oldestIdle takes the connection of client (any client if it is the zero
// Addr) that has been idle longest, if at least minIdle, off the idle list.
// l.mu is held.
func (l *ConnLimiter) oldestIdle(client netip.Addr) *limitedConn {
	cutoff := l.now().Add(-l.minIdle)
	for e := l.idle.Front(); e != nil; e = e.Next() {
		c := e.Value.(*limitedConn)
		if c.idleSince.After(cutoff) {
			return nil // the rest have been idle for less
		}
		if !client.IsValid() || c.client == client {
			l.idle.Remove(e)
			c.idleElem = nil
			return c
		}
	}
	return nil
}

// place takes a free place. When there is none, it closes the connection
// idle longest and takes its place; when no connection has been idle long
// enough, it waits for one to be, or for a place to free.
func (l *ConnLimiter) place() error {
	var timer *time.Timer
	for {
		select {
		case l.slots <- struct{}{}:
			return nil
		default:
		}
		l.mu.Lock()
		victim := l.oldestIdle(netip.Addr{})
		wait := time.Duration(0)
		if victim == nil && l.idle.Len() > 0 {
			wait = l.idle.Front().Value.(*limitedConn).idleSince.Add(l.minIdle).Sub(l.now())
		}
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			victim.Close() // gives its place back at once
			continue
		}
		var ripe <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
				defer timer.Stop()
			} else {
				timer.Reset(wait)
			}
			ripe = timer.C
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		case <-l.closed:
			return net.ErrClosed
		case <-l.idled:
		case <-ripe:
		}
	}
}

// ConnState is for http.Server.ConnState: it keeps the list of idle
// connections that Accept closes to make room.
func (l *ConnLimiter) ConnState(c net.Conn, state http.ConnState) {
	lc := asLimited(c)
	if lc == nil {
		return
	}
	l.mu.Lock()
	if lc.idleElem != nil {
		l.idle.Remove(lc.idleElem)
		lc.idleElem = nil
	}
	if state == http.StateIdle && !lc.closed {
		lc.idleSince = l.now()
		lc.idleElem = l.idle.PushBack(lc)
	}
	l.mu.Unlock()
	if state == http.StateIdle {
		select {
		case l.idled <- struct{}{}:
		default:
		}
	}
}

// Close stops the listener and wakes an Accept waiting for a place.
func (l *ConnLimiter) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Open is the number of connections open now.
func (l *ConnLimiter) Open() int { return int(l.open.Load()) }

// Handler answers with "Connection: close" while three quarters or more of
// the places are taken: the device reconnects for its next request, and
// its place goes to whoever waited longest meanwhile. A connection that
// came through ConnContext is closed only every crowdedRequests requests:
// a new connection per request would spend the server's time on handshakes.
func (l *ConnLimiter) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.open.Load() >= l.crowded {
			c, _ := r.Context().Value(limitedConnKey{}).(*limitedConn)
			if c == nil || c.requests.Add(1)%crowdedRequests == 0 {
				w.Header().Set("Connection", "close")
			}
		}
		h.ServeHTTP(w, r)
	})
}

// crowdedRequests is how many requests a connection serves while the
// server is crowded before it is closed.
const crowdedRequests = 16

type limitedConnKey struct{}

// ConnContext is for http.Server.ConnContext: it lets Handler count each
// connection's requests.
func (l *ConnLimiter) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc := asLimited(c); lc != nil {
		return context.WithValue(ctx, limitedConnKey{}, lc)
	}
	return ctx
}

// asLimited is the limitedConn under c, or nil.
func asLimited(c net.Conn) *limitedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*limitedConn)
	return lc
}

// clientOf is the address a client's connections are counted under: its
// IPv4 address, or its IPv6 /64 (a host is given a whole /64 and can use
// any address in it).
func clientOf(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.IPv4Unspecified() // not TCP (tests): one client
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return ip
}

type limitedConn struct {
	net.Conn
	limiter  *ConnLimiter
	client   netip.Addr
	once     sync.Once
	requests atomic.Int32 // served while crowded

	// Set by Accept before the connection is handed out.
	counted bool // in limiter.clients
	placed  bool // holds a place

	// Guarded by limiter.mu.
	idleElem  *list.Element // in limiter.idle while idle
	idleSince time.Time
	closed    bool
}

// Close closes c and gives back its place and its count against its client.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		l := c.limiter
		l.mu.Lock()
		c.closed = true
		if c.idleElem != nil {
			l.idle.Remove(c.idleElem)
			c.idleElem = nil
		}
		if c.counted {
			if l.clients[c.client]--; l.clients[c.client] <= 0 {
				delete(l.clients, c.client)
			}
		}
		l.mu.Unlock()
		if c.placed {
			l.open.Add(-1)
			<-l.slots
		}
	})
	// Unwrapped, as any net.Conn's: callers test for net.ErrClosed and
	// *net.OpError, which already names the addresses.
	return err
}

// Limit is the most connections l holds open at once.
func (l *ConnLimiter) Limit() int { return cap(l.slots) }

// Evicted is how many idle connections l has closed to make room.
func (l *ConnLimiter) Evicted() uint64 { return l.evicted.Load() }

// Refused is how many connections l has closed unanswered because their
// client held its share.
func (l *ConnLimiter) Refused() uint64 { return l.refused.Load() }

// WatchConns adds l's open connections, limit, and the connections it
// closed to /metrics: a server that sits at its limit keeps devices waiting
// to connect.
func (s *Server) WatchConns(l *ConnLimiter) {
	s.metrics.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_http_connections_open", Help: "Open HTTP connections."},
			func() float64 { return float64(l.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_http_connections_limit", Help: "Most HTTP connections open at once (--max-conns)."},
			func() float64 { return float64(l.Limit()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fota_http_connections_evicted_total", Help: "Idle keep-alive connections closed to make room for new ones."},
			func() float64 { return float64(l.Evicted()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fota_http_connections_refused_total", Help: "Connections closed unanswered because their client address held --max-conns-per-client."},
			func() float64 { return float64(l.Refused()) }))
}
