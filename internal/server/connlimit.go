package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimiter is a listener that holds at most a set number of connections open at
// once; devices beyond that wait in the kernel's accept queue, costing the
// server nothing. Each open connection costs net/http a goroutine and 8 KiB
// of buffers for as long as it lives, so this bounds the server's memory
// however many devices arrive together. Its Handler turns keep-alive off
// while the server is crowded, so that idle connections give their places
// to devices waiting to connect.
type ConnLimiter struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	open      atomic.Int64
	crowded   int64
}

// LimitConns limits ln to maxConns open connections (at least 1).
func LimitConns(ln net.Listener, maxConns int) *ConnLimiter {
	limit := max(maxConns, 1)
	return &ConnLimiter{Listener: ln, slots: make(chan struct{}, limit), closed: make(chan struct{}),
		crowded: int64(max(limit*3/4, 1))}
}

// Accept waits for a free place, then accepts the next connection.
func (l *ConnLimiter) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.open.Add(1)
	return &limitedConn{Conn: c, limiter: l}, nil
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
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		return context.WithValue(ctx, limitedConnKey{}, lc)
	}
	return ctx
}

type limitedConn struct {
	net.Conn
	limiter  *ConnLimiter
	once     sync.Once
	requests atomic.Int32 // served while crowded
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.limiter.open.Add(-1)
		<-c.limiter.slots
	})
	return err
}

// Limit is the most connections l holds open at once.
func (l *ConnLimiter) Limit() int { return cap(l.slots) }

// WatchConns adds l's open connections and limit to /metrics: a server
// that sits at its limit keeps devices waiting to connect.
func (s *Server) WatchConns(l *ConnLimiter) {
	s.metrics.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_http_connections_open", Help: "Open HTTP connections."},
			func() float64 { return float64(l.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fota_http_connections_limit", Help: "Most HTTP connections open at once (--max-conns)."},
			func() float64 { return float64(l.Limit()) }))
}
