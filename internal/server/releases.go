package server

import (
	"context"
	"sync"

	"github.com/ecowatt/fota"
)

// releaseCache keeps releases by id: they never change once published, so
// chunk requests need no database read for them.
type releaseCache struct {
	store fota.Store
	mu    sync.RWMutex
	byID  map[int64]*fota.Release
}

func newReleaseCache(store fota.Store) *releaseCache {
	return &releaseCache{store: store, byID: map[int64]*fota.Release{}}
}

func (c *releaseCache) get(ctx context.Context, id int64) (*fota.Release, error) {
	c.mu.RLock()
	r, ok := c.byID[id]
	c.mu.RUnlock()
	if ok {
		return r, nil
	}
	r, err := c.store.Release(ctx, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.byID[id] = r
	c.mu.Unlock()
	return r, nil
}

func (c *releaseCache) forget(id int64) {
	c.mu.Lock()
	delete(c.byID, id)
	c.mu.Unlock()
}

// outOfSequenceWindow is how far ahead of the recorded progress a device may
// ask (recorded progress can lag what another replica served by a flush);
// earlier chunks can always be fetched again.
func outOfSequenceWindow(total int) int { return max(32, total/100) + 64 }

// served notes that chunks before next were served; the progress tracker
// writes it within half a second. BytesServed counts each ciphertext byte
// once, however often re-fetched.
func (s *Server) served(ctx context.Context, sess *fota.Session, r *fota.Release, next int) error {
	return s.servedFrom(ctx, sess, r, -1, next)
}

// legacyProgressSlack is how far past what this replica knows was served
// an EcoWatt-API chunk may start and still count as progress. Progress
// there is what lets an unauthenticated check-in confirm a session, so it
// counts only chunks fetched (nearly) in order, as the original firmware
// fetches them: one request for the last chunk must not make a session look
// fully served. The slack covers what other replicas served but this one
// has not yet read (about a second and a half of chunks).
const legacyProgressSlack = 32

// progressSlack is legacyProgressSlack for a release of total chunks: a
// quarter of a small release at most (and at least 2), so that a request
// for the last chunk alone never makes a small release look served.
func progressSlack(total int) int { return min(legacyProgressSlack, max(2, total/4)) }

// servedFrom is served for chunks from..next-1; from >= 0 counts them only
// if from is within legacyProgressSlack of the session's served mark.
func (s *Server) servedFrom(ctx context.Context, sess *fota.Session, r *fota.Release, from, next int) error {
	prev, moved := s.hot.advance(sess, from, next)
	if !moved {
		return nil
	}
	end := min(int64(next)*int64(r.ChunkSize), r.CiphertextSize)
	s.progress.note(sess.ID, next, end-int64(prev)*int64(r.ChunkSize))
	return nil
}
