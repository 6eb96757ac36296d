package server

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/semver"
)

// Decider picks the release a device should install, or none with a reason
// the device is told. Fleet rollouts replace this decision later.
type Decider interface {
	Decide(ctx context.Context, d *fota.Device, running string) (*fota.Release, string, error)
}

// NewestRelease offers the device's pinned release if it has one, and
// otherwise the newest release (semantic-version order) for its hardware
// that is newer than what it runs and that it has not rolled back from.
type NewestRelease struct {
	Store fota.Store
}

// Decide implements Decider.
func (n NewestRelease) Decide(ctx context.Context, d *fota.Device, running string) (*fota.Release, string, error) {
	runningV, err := semver.Parse(running)
	if err != nil {
		return nil, "", fota.Errorf(fota.EINVALID, "running version %q: %v", running, err)
	}
	rejected, err := n.Store.RejectedReleases(ctx, d.ID)
	if err != nil {
		return nil, "", err
	}
	newer := func(r *fota.Release) bool {
		v, err := semver.Parse(r.Version)
		return err == nil && semver.Compare(v, runningV) > 0
	}
	if d.PinnedVersion != "" {
		r, err := n.Store.ReleaseByVersion(ctx, d.Hardware, d.PinnedVersion)
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			return nil, fmt.Sprintf("pinned to %s, which is not published for %s", d.PinnedVersion, d.Hardware), nil
		}
		if err != nil {
			return nil, "", err
		}
		switch {
		case slices.Contains(rejected, r.ID):
			return nil, fmt.Sprintf("pinned to %s, which this device rolled back from", r.Version), nil
		case !newer(r):
			return nil, fmt.Sprintf("pinned to %s; running %s", r.Version, running), nil
		}
		return r, "", nil
	}
	all, err := n.Store.Releases(ctx, d.Hardware)
	if err != nil {
		return nil, "", err
	}
	var best *fota.Release
	var bestV semver.Version
	skipped := 0
	for _, r := range all {
		v, err := semver.Parse(r.Version)
		if err != nil || semver.Compare(v, runningV) <= 0 {
			continue
		}
		if slices.Contains(rejected, r.ID) {
			skipped++
			continue
		}
		if best == nil || semver.Compare(v, bestV) > 0 {
			best, bestV = r, v
		}
	}
	if best == nil {
		if skipped > 0 {
			return nil, fmt.Sprintf("running %s; the newer release for %s was rolled back on this device and is not offered again until a newer one is published", running, d.Hardware), nil
		}
		return nil, fmt.Sprintf("running %s, the newest release for %s", running, d.Hardware), nil
	}
	return best, "", nil
}

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

// openOrResume returns the device's active session for release r, or opens
// a new one (abandoning any other). A device that checks again after a
// reboot resumes where it was.
func (s *Server) openOrResume(ctx context.Context, d *fota.Device, r *fota.Release, api string) (*fota.Session, error) {
	active, err := s.store.ActiveSession(ctx, d.ID)
	switch {
	case err == nil && active.ReleaseID == r.ID && active.API == api:
		return active, nil
	case err != nil && fota.ErrorCode(err) != fota.ENOTFOUND:
		return nil, err
	}
	id, err := newSessionID()
	if err != nil {
		return nil, err
	}
	sess := &fota.Session{ID: id, DeviceID: d.ID, ReleaseID: r.ID, ReleaseVersion: r.Version, API: api, TotalChunks: r.Chunks()}
	if err := s.store.OpenSession(ctx, sess, s.maxSessions); err != nil {
		return nil, err
	}
	if active != nil {
		s.progress.flush(ctx, active.ID)
		s.hot.forgetSession(active)
	}
	s.hot.forgetSession(sess)
	s.hot.opened(sess)
	s.log.Info("session opened", "device_id", d.ID, "session_id", id, "release_version", r.Version, "api", api)
	return sess, nil
}

// outOfSequenceWindow is how far ahead of the recorded progress a device may
// ask (recorded progress can lag what another replica served by a flush);
// earlier chunks can always be fetched again.
func outOfSequenceWindow(total int) int { return max(32, total/100) + 64 }

// served notes that chunks before next were served; the progress tracker
// writes it within half a second. BytesServed counts each ciphertext byte
// once, however often re-fetched.
func (s *Server) served(ctx context.Context, sess *fota.Session, r *fota.Release, next int) error {
	prev := s.hot.advance(sess, next)
	if next <= prev {
		return nil
	}
	end := min(int64(next)*int64(r.ChunkSize), r.CiphertextSize)
	s.progress.note(sess.ID, next, end-int64(prev)*int64(r.ChunkSize))
	return nil
}
