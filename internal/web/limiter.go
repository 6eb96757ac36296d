package web

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota"
)

// Sign-in limits: a user name, and a client address (IPv6: its /64), may
// have at most signinFailures failed or unfinished sign-ins within
// signinWindow; past that, attempts are refused without a password check
// until the oldest failure leaves the window. An attempt is reserved
// before its password is checked, so a burst of simultaneous guesses gets
// no more checks than guesses sent one by one. Counted per replica.
const (
	signinFailures = 5
	signinWindow   = 15 * time.Minute
	// signinKeys bounds the names and addresses tracked. A flood of new
	// ones beyond it is refused (new keys wait a minute) rather than
	// tracked at the cost of memory or forgotten at the cost of the limit.
	signinKeys = 50000
	// sweepEvery bounds how often a full limiter looks for entries whose
	// failures have all left the window.
	sweepEvery = 10 * time.Second
	// fullWait is how long an untracked name or address waits while the
	// limiter is full.
	fullWait = time.Minute
)

type limitEntry struct {
	failures []time.Time // within the window, oldest first
	inFlight int         // attempts whose password is being checked
}

type signinLimiter struct {
	mu        sync.Mutex
	now       func() time.Time
	entries   map[string]*limitEntry
	lastSweep time.Time
}

func newSigninLimiter(now func() time.Time) *signinLimiter {
	return &signinLimiter{now: now, entries: map[string]*limitEntry{}}
}

// limitKeys are the keys an attempt counts against: its address (IPv6
// grouped by /64, as one customer gets a /64) and, if it is a valid user
// name, the name. An invalid name is never checked against a password and
// costs the server nothing, so it counts against the address alone.
func limitKeys(name, addr string) []string {
	keys := []string{"addr:" + addressGroup(addr)}
	if fota.ValidTokenName(name) {
		keys = append(keys, "name:"+name)
	}
	return keys
}

func addressGroup(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Is4() || ip.Is4In6() {
		return addr
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// begin reserves an attempt for name from addr. It returns 0 if the
// attempt may go on (then end must be called), else how long to wait.
func (l *signinLimiter) begin(name, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	keys := limitKeys(name, addr)
	var wait time.Duration
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			if len(l.entries) >= signinKeys && !l.sweep(now) {
				wait = max(wait, fullWait)
			}
			continue
		}
		e.failures = recent(e.failures, now)
		switch {
		case len(e.failures) >= signinFailures:
			wait = max(wait, e.failures[len(e.failures)-signinFailures].Add(signinWindow).Sub(now))
		case len(e.failures)+e.inFlight >= signinFailures:
			wait = max(wait, time.Second) // attempts under way: try again shortly
		}
	}
	if wait > 0 {
		return wait
	}
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			e = &limitEntry{}
			l.entries[k] = e
		}
		e.inFlight++
	}
	return 0
}

// end records how an attempt begun with begin went.
func (l *signinLimiter) end(name, addr string, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range limitKeys(name, addr) {
		e := l.entries[k]
		if e == nil {
			continue
		}
		e.inFlight = max(e.inFlight-1, 0)
		switch {
		case failed:
			e.failures = append(recent(e.failures, now), now)
			if len(e.failures) > signinFailures {
				e.failures = e.failures[len(e.failures)-signinFailures:]
			}
		case strings.HasPrefix(k, "name:"):
			// The right password: the name's failures are forgotten (the
			// address's stay: one good password does not license
			// guessing others).
			e.failures = nil
		}
		if len(e.failures) == 0 && e.inFlight == 0 {
			delete(l.entries, k)
		}
	}
}

// sweep drops entries with nothing left in the window, at most every
// sweepEvery, and reports whether there is room for another.
func (l *signinLimiter) sweep(now time.Time) bool {
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.lastSweep = now
		for k, e := range l.entries {
			if e.failures = recent(e.failures, now); len(e.failures) == 0 && e.inFlight == 0 {
				delete(l.entries, k)
			}
		}
	}
	return len(l.entries) < signinKeys
}

func recent(fs []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= signinWindow {
		i++
	}
	return fs[i:]
}

// clientAddress is the address a request came from: the connection's, or
// behind a proxy the last value of the header the proxy sets
// (Config.ClientIPHeader), which is the one the proxy itself added.
func (d *Dashboard) clientAddress(r *http.Request) string {
	if h := d.cfg.ClientIPHeader; h != "" {
		if vs := r.Header.Values(h); len(vs) > 0 {
			last := vs[len(vs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
