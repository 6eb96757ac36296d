package mqtt

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// credCache keeps the MQTT passwords derived from device keys, so a fleet
// reconnecting at once (after a broker restart or a network outage) costs
// one store lookup a device, shared by concurrent connections with the same
// id, and no lookup for a device reconnecting within credTTL. Entries live
// credTTL (credNegativeTTL for unknown and removed ids): that is how long a
// removed device or a changed key may still open a new connection. Failed
// lookups are not cached. Size is bounded: when full, expired entries go
// first, then arbitrary ones.
type credCache struct {
	lookup func(ctx context.Context, id string) (*fota.Device, error)
	max    int
	now    func() time.Time
	sem    chan struct{} // bounds concurrent store lookups

	mu sync.Mutex
	m  map[string]*credEntry
}

// credEntry is one id's password; ready is closed once it is filled in.
type credEntry struct {
	ready    chan struct{}
	password string // "" for an unknown or removed device
	err      error
	expires  time.Time
}

func newCredCache(lookup func(ctx context.Context, id string) (*fota.Device, error), max int) *credCache {
	return &credCache{
		lookup: lookup,
		max:    max,
		now:    time.Now,
		sem:    make(chan struct{}, lookupConcurrency),
		m:      make(map[string]*credEntry),
	}
}

// password returns the MQTT password of device id, "" if it is unknown or
// removed, or an error if the store failed.
func (c *credCache) password(ctx context.Context, id string) (string, error) {
	c.mu.Lock()
	e := c.m[id]
	if e != nil {
		select {
		case <-e.ready:
			if !c.now().Before(e.expires) {
				e = nil // expired: look it up again
			}
		default: // a lookup is under way: share it
		}
	}
	if e == nil {
		if len(c.m) >= c.max {
			c.evictLocked()
		}
		e = &credEntry{ready: make(chan struct{})}
		c.m[id] = e
		// On its own goroutine and deadline: the lookup is shared, so no
		// caller's context may cut it short, and the store's deep stack
		// (SQLite) is not left grown on the connection's long-lived
		// goroutine.
		go c.fill(id, e)
	}
	c.mu.Unlock()
	select {
	case <-e.ready:
		return e.password, e.err
	case <-ctx.Done():
		return "", fmt.Errorf("wait for the lookup of device %s: %w", id, ctx.Err())
	}
}

func (c *credCache) fill(id string, e *credEntry) {
	e.password, e.err = c.fetch(id)
	now := c.now()
	e.expires = now.Add(credTTL)
	if e.password == "" {
		e.expires = now.Add(credNegativeTTL)
	}
	if e.err != nil {
		c.mu.Lock()
		if c.m[id] == e {
			delete(c.m, id)
		}
		c.mu.Unlock()
	}
	close(e.ready)
}

func (c *credCache) fetch(id string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("look up device %s: wait for the store: %w", id, ctx.Err())
	}
	defer func() { <-c.sem }()
	d, err := c.lookup(ctx, id)
	switch {
	case fota.ErrorCode(err) == fota.ENOTFOUND:
		return "", nil
	case err != nil:
		return "", fmt.Errorf("look up device %s: %w", id, err)
	case d == nil || d.ID != id || !d.Removed.IsZero():
		return "", nil
	}
	return protocol.MQTTPassword(d.PSK, id), nil
}

// evictLocked makes room: expired entries first, then arbitrary ones (Go's
// map order) down to seven eighths of max, so eviction is not paid on
// every insertion.
func (c *credCache) evictLocked() {
	now := c.now()
	for id, e := range c.m {
		select {
		case <-e.ready:
			if !now.Before(e.expires) {
				delete(c.m, id)
			}
		default:
		}
	}
	for id := range c.m {
		if len(c.m) <= c.max-c.max/8-1 {
			break
		}
		delete(c.m, id)
	}
}

// len is the number of cached ids (tests).
func (c *credCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
