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
// signinWindow, and a network (IPv6 /48, IPv4 /24) ten times as many;
// past that, attempts are refused without a password check until the
// oldest failure leaves the window. An attempt is reserved before its
// password is checked, so a burst of simultaneous guesses gets no more
// checks than guesses sent one by one. Counted per replica.
const (
	signinFailures = 5
	networkBudget  = 10 * signinFailures
	signinWindow   = 15 * time.Minute
	// signinKeys bounds the names, addresses and networks tracked. Past
	// it, what is not tracked yet shares one overflow budget per kind
	// (name, address, network), overflowBudget failures in the window: a
	// flood of new addresses slows new sign-ins down rather than costing
	// memory or locking everyone out, and the networks' budgets make such
	// a flood need a thousand networks.
	signinKeys     = 50000
	overflowBudget = 20 * signinFailures
	// sweepEvery bounds how often a full limiter looks for entries whose
	// failures have all left the window.
	sweepEvery = 10 * time.Second
)

type limitEntry struct {
	failures []time.Time // within the window, oldest first; at most the key's budget
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
// grouped by /64, as one customer gets a /64), its network, and, if it is
// a valid user name, the name. An invalid name is never checked against a
// password and costs the server nothing, so it counts against the address
// alone.
func limitKeys(name, addr string) []string {
	group, network := addressGroups(addr)
	keys := []string{"addr:" + group, "net:" + network}
	if fota.ValidTokenName(name) {
		keys = append(keys, "name:"+name)
	}
	return keys
}

// addressGroups are an address's own group (IPv6 /64, else the address)
// and its network (IPv6 /48, IPv4 /24).
func addressGroups(addr string) (group, network string) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr, addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		n, _ := ip.Prefix(24)
		return ip.String(), n.String()
	}
	g, _ := ip.Prefix(64)
	n, _ := ip.Prefix(48)
	return g.String(), n.String()
}

// budget is how many failures and unfinished attempts key may have.
func budget(key string) int {
	switch {
	case strings.HasPrefix(key, "overflow:"):
		return overflowBudget
	case strings.HasPrefix(key, "net:"):
		return networkBudget
	}
	return signinFailures
}

// begin reserves an attempt for name from addr. It returns the keys it
// reserved, to give to end, or how long to wait.
func (l *signinLimiter) begin(name, addr string) ([]string, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	keys := limitKeys(name, addr)
	var wait time.Duration
	for i, k := range keys {
		e := l.entries[k]
		if e == nil && len(l.entries) >= signinKeys && !l.sweep(now) {
			k = "overflow:" + k[:strings.IndexByte(k, ':')]
			keys[i] = k
			e = l.entries[k]
		}
		if e == nil {
			continue
		}
		e.failures = recent(e.failures, now)
		b := budget(k)
		switch {
		case len(e.failures) >= b:
			wait = max(wait, e.failures[len(e.failures)-b].Add(signinWindow).Sub(now))
		case len(e.failures)+e.inFlight >= b:
			wait = max(wait, time.Second) // attempts under way: try again shortly
		}
	}
	if wait > 0 {
		return nil, wait
	}
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			e = &limitEntry{}
			l.entries[k] = e
		}
		e.inFlight++
	}
	return keys, 0
}

// end records how an attempt went, for the keys begin reserved.
func (l *signinLimiter) end(keys []string, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			continue
		}
		e.inFlight = max(e.inFlight-1, 0)
		switch {
		case failed:
			e.failures = append(recent(e.failures, now), now)
			if b := budget(k); len(e.failures) > b {
				e.failures = e.failures[len(e.failures)-b:]
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
			if ip, ok := parseClientIP(strings.TrimSpace(last)); ok {
				return ip
			}
			d.headerWarning.Do(func() {
				d.log.Warn("dashboard: the client address header does not hold an address; using the connection's", "header", h)
			})
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// parseClientIP reads an address as proxies write it: bare, host:port or
// [v6]:port; a zone is dropped.
func parseClientIP(s string) (string, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("").String(), true
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap().WithZone("").String(), true
	}
	return "", false
}
