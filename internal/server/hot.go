package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
)

// The chunk path is the server's hot path: thousands of requests a second
// that each need a device key and a session. This file keeps both in
// memory, and turns per-chunk progress into a write twice a second.
// Nothing here is state another replica needs: device keys and session
// snapshots live a second where replicas share the store (a removed
// device's key stops working within that on every replica, at once on the
// one that removed it), and progress is advisory (devices keep their own).

// DefaultSessionCacheTTL is how long a session snapshot serves chunk
// requests unless Config says otherwise. A session ended on another replica
// is still served for at most this long, which does no harm: its chunks are
// ciphertext bound to that session.
const DefaultSessionCacheTTL = time.Second

// maxCached bounds each cache; past it the cache starts over.
const maxCached = 200_000

type cachedSession struct {
	sess *fota.Session
	at   time.Time
}

type hotCache struct {
	ttl      time.Duration // of session snapshots
	mu       sync.Mutex
	keys     map[string]deviceKey
	byID     map[string]cachedSession
	byDevice map[string]cachedSession // the device's active session
	served   map[string]int           // session id: chunks served in order, ahead of the store
	loading  map[string]*sessionLoad  // snapshot reads in flight, shared by concurrent misses
}

// sessionLoad is one store read of a snapshot that expired; the requests
// that find it expired meanwhile wait for it instead of each reading too.
type sessionLoad struct {
	done chan struct{}
	sess *fota.Session
	err  error
}

func newHotCache(ttl time.Duration) *hotCache {
	return &hotCache{ttl: ttl, keys: map[string]deviceKey{}, byID: map[string]cachedSession{}, byDevice: map[string]cachedSession{},
		served: map[string]int{}, loading: map[string]*sessionLoad{}}
}

// tooFarAhead reports whether chunk is more than the window ahead of what
// this replica served of the session in order. A session this replica has
// not served yet (after a restart, or served by another replica) may start
// anywhere: progress in the store can lag what was served by a flush, and a
// device resuming from its own checkpoint must not be refused.
func (c *hotCache) tooFarAhead(sess *fota.Session, chunk int) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	served, ok := c.served[sess.ID]
	next := max(sess.NextChunk, served)
	return ok && chunk > next+outOfSequenceWindow(sess.TotalChunks), next
}

// opened starts the served mark of a session this replica just opened, so
// the window applies from its first request.
func (c *hotCache) opened(sess *fota.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.served[sess.ID] = 0
}

// advance raises a session's served mark to next and returns the previous
// one and whether it moved. With from >= 0 it moves only if from is at most
// legacyProgressSlack past the mark: chunks fetched far ahead are served
// but not counted.
func (c *hotCache) advance(sess *fota.Session, from, next int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.served) >= maxCached {
		clear(c.served)
	}
	prev := max(sess.NextChunk, c.served[sess.ID])
	if next <= prev || (from >= 0 && from > prev+progressSlack(sess.TotalChunks)) {
		return prev, false
	}
	c.served[sess.ID] = next
	return prev, true
}

// deviceKey is what the hot path needs of a device: its key, and its API
// policy, which the update service tells this replica of when it changes
// here; a change on another replica ends the sessions the policy no longer
// allows, so their chunks stop within a session snapshot's life.
type deviceKey struct {
	psk protocol.PSK
	api string
	at  time.Time // when it was read: it serves for the cache's TTL
}

// deviceKey returns a device's key and API policy, reading the store once
// per device and TTL (the session snapshots' TTL: a second where replicas
// share the store), so that a device removed on another replica is
// refused within it. When it had to read the store it also returns the
// device as read, so that a check-in on the device's first request does
// not read it again. A removed device is unknown (ENOTFOUND).
func (s *Server) deviceKey(ctx context.Context, id string) (deviceKey, *fota.Device, error) {
	c := s.hot
	now := s.now()
	c.mu.Lock()
	k, ok := c.keys[id]
	c.mu.Unlock()
	if ok && now.Sub(k.at) < c.ttl && !now.Before(k.at) {
		return k, nil, nil
	}
	d, err := s.store.Device(ctx, id)
	if err == nil && !d.Removed.IsZero() {
		err = fota.Errorf(fota.ENOTFOUND, "unknown device %q", id)
	}
	if err != nil {
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			c.forgetKey(id)
		}
		return deviceKey{}, nil, err
	}
	k = deviceKey{psk: d.PSK, api: d.API, at: now}
	c.mu.Lock()
	if len(c.keys) >= maxCached {
		c.keys = map[string]deviceKey{}
	}
	c.keys[id] = k
	c.mu.Unlock()
	return k, d, nil
}

// admittedKey is deviceKey for a request on api, refused (EFORBIDDEN)
// unless the device's API policy allows api.
func (s *Server) admittedKey(ctx context.Context, id, api string) (deviceKey, *fota.Device, error) {
	k, read, err := s.deviceKey(ctx, id)
	if err != nil {
		return k, nil, err
	}
	return s.admitKey(ctx, id, api, k, read)
}

// admitKey applies the device's API policy to a key deviceKey returned
// (and the device, if it read it). A refusal from the cache is checked
// against the store first: the policy may have been widened on another
// replica.
func (s *Server) admitKey(ctx context.Context, id, api string, k deviceKey, read *fota.Device) (deviceKey, *fota.Device, error) {
	if read == nil && !(&fota.Device{API: k.api}).Allows(api) {
		s.hot.forgetKey(id)
		var err error
		if k, read, err = s.deviceKey(ctx, id); err != nil {
			return k, nil, err
		}
	}
	if err := update.Admit(&fota.Device{ID: id, API: k.api}, api); err != nil {
		s.log.Warn("request refused by the device's API policy", "device_id", id, "api", api, "policy", k.api)
		return k, nil, err
	}
	return k, read, nil
}

// forgetKey drops a device's cached key and policy.
func (c *hotCache) forgetKey(id string) {
	c.mu.Lock()
	delete(c.keys, id)
	c.mu.Unlock()
}

// forgetSession drops a session's snapshots after this replica changed it.
func (c *hotCache) forgetSession(sess *fota.Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byID, sess.ID)
	delete(c.byDevice, sess.DeviceID)
	delete(c.served, sess.ID)
}

// sessionByID is a session snapshot for the chunk path.
func (s *Server) sessionByID(ctx context.Context, id string) (*fota.Session, error) {
	return s.snapshot(ctx, s.hot.byID, "id:"+id, id, s.store.Session)
}

// activeSessionOf is the device's active session snapshot, for the chunk path.
func (s *Server) activeSessionOf(ctx context.Context, deviceID string) (*fota.Session, error) {
	return s.snapshot(ctx, s.hot.byDevice, "device:"+deviceID, deviceID, s.store.ActiveSession)
}

// snapshot returns m[key] while fresh, else reads it with read, one read
// per key at a time: when a busy device's snapshot expires, its requests in
// flight share one store query rather than queueing one each for the pool.
func (s *Server) snapshot(ctx context.Context, m map[string]cachedSession, flight, key string,
	read func(context.Context, string) (*fota.Session, error)) (*fota.Session, error) {
	c := s.hot
	now := time.Now()
	c.mu.Lock()
	if e, ok := m[key]; ok && now.Sub(e.at) < c.ttl {
		c.mu.Unlock()
		return e.sess, nil
	}
	if l, ok := c.loading[flight]; ok {
		c.mu.Unlock()
		select {
		case <-l.done:
			return l.sess, l.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := &sessionLoad{done: make(chan struct{})}
	c.loading[flight] = l
	c.mu.Unlock()

	// Not the caller's context: others wait on this read, and one client
	// hanging up must not fail their requests.
	l.sess, l.err = read(context.WithoutCancel(ctx), key)
	c.mu.Lock()
	delete(c.loading, flight)
	if l.err == nil {
		if len(m) >= maxCached {
			clear(m)
		}
		m[key] = cachedSession{sess: l.sess, at: now}
	}
	c.mu.Unlock()
	close(l.done)
	return l.sess, l.err
}

// progressTracker collects chunk progress and writes it in batches.
type progressTracker struct {
	store fota.Store
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]progress
	stop    chan struct{}
	done    chan struct{}
	// writing is held for the whole of a flush, taking the batch and
	// writing it: a flush of one session that finds nothing pending must
	// not return while the batch that took its progress is still being
	// written, since its caller reads the progress next.
	writing sync.Mutex
}

type progress struct {
	next  int
	bytes int64
}

// progressFlushInterval is how often collected progress is written, at
// most; after a flush that took d the next waits progressFlushShare × d,
// so that with many sessions in progress flushing takes at most a tenth of
// the time and does not crowd out the requests.
const (
	progressFlushInterval = 500 * time.Millisecond
	progressFlushShare    = 10
)

func newProgressTracker(store fota.Store, log *slog.Logger) *progressTracker {
	p := &progressTracker{store: store, log: log, pending: map[string]progress{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTimer(progressFlushInterval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.flush(context.Background(), "")
				return
			case <-t.C:
				start := time.Now()
				p.flush(context.Background(), "")
				t.Reset(max(progressFlushInterval, progressFlushShare*time.Since(start)))
			}
		}
	}()
	return p
}

// note records that a session's chunks before next were served, with the
// number of new ciphertext bytes.
func (p *progressTracker) note(id string, next int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.pending[id]
	if next > cur.next {
		cur.next = next
	}
	cur.bytes += bytes
	p.pending[id] = cur
}

// flush writes pending progress: of one session, or of all for "".
func (p *progressTracker) flush(ctx context.Context, only string) {
	p.writing.Lock()
	defer p.writing.Unlock()
	p.mu.Lock()
	batch := p.pending
	if only != "" {
		batch = nil
		if pr, ok := p.pending[only]; ok {
			batch = map[string]progress{only: pr}
			delete(p.pending, only)
		}
	} else {
		p.pending = map[string]progress{}
	}
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	updates := make([]fota.Progress, 0, len(batch))
	for id, pr := range batch {
		updates = append(updates, fota.Progress{SessionID: id, Next: pr.next, Bytes: pr.bytes})
	}
	// One transaction for all: ten thousand slow sessions made ten
	// thousand transactions a flush when each had its own.
	if err := p.store.RecordProgress(ctx, updates); err != nil {
		p.log.Warn("record progress", "sessions", len(updates), "error", err)
	}
}

// close writes what is pending and stops the flusher.
func (p *progressTracker) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// serverCache tells this server's caches of what the update service changed.
type serverCache struct{ s *Server }

func (c serverCache) Flush(ctx context.Context, id string) { c.s.progress.flush(ctx, id) }
func (c serverCache) Forget(sess *fota.Session)            { c.s.hot.forgetSession(sess) }
func (c serverCache) Opened(sess *fota.Session)            { c.s.hot.opened(sess) }
func (c serverCache) ForgetDevice(id string)               { c.s.hot.forgetKey(id) }
