package update

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/semver"
)

// Request is what a decision is made on.
type Request struct {
	Device  *fota.Device
	Running string // the version the device says it runs
	API     string // the API it checked in on
	Now     time.Time
}

// Decision is what a device should install, or why nothing.
type Decision struct {
	Release *fota.Release // nil: nothing, for Reason
	Reason  string
	// RolloutID is the rollout the release comes from; 0 for a pin.
	RolloutID int64
	// ResumeOnly: outside its rollout's maintenance windows (or while the
	// rollout is paused) a device may finish a download it started but
	// is not offered a new one; Reason says why.
	ResumeOnly bool
	// InstallAfter and InstallUntil bound the installation (zero: no
	// bound): the maintenance window that is open now, or the next.
	InstallAfter, InstallUntil time.Time
	// operatorsOnly marks a Reason that tells of a rollout (its id, state,
	// an operator's reason, waves): not for unauthenticated callers.
	operatorsOnly bool
}

// PublicReason is the reason an unauthenticated caller may be told.
func (d Decision) PublicReason(running string) string {
	if d.operatorsOnly {
		return fmt.Sprintf("running %s; nothing to install now", running)
	}
	return d.Reason
}

// decide picks the release a device should install. Precedence, the one
// rule: a pin wins; else the device's rollout, if it offers now and the
// device's wave is open; else nothing. Whatever the source, a release is
// never offered when it is not newer than what the device runs, was
// withdrawn, or is held back from the device: never one it rolled back
// from on the native API, and on the EcoWatt API not one backed off after
// a reported failure.
func (s *Service) decide(ctx context.Context, req Request) (Decision, error) {
	d := req.Device
	runningV, err := semver.Parse(req.Running)
	if err != nil {
		return Decision{}, fota.Errorf(fota.EINVALID, "running version %q: %v", req.Running, err)
	}
	newer := func(r *fota.Release) bool {
		v, err := semver.Parse(r.Version)
		return err == nil && semver.Compare(v, runningV) > 0
	}
	if d.PinnedVersion != "" {
		r, err := s.store.ReleaseByVersion(ctx, d.Hardware, d.PinnedVersion)
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			return Decision{Reason: fmt.Sprintf("pinned to %s, which is not published for %s", d.PinnedVersion, d.Hardware)}, nil
		}
		if err != nil {
			return Decision{}, err
		}
		if why, err := s.withheld(ctx, req, r); why != "" || err != nil {
			return Decision{Reason: "pinned to " + r.Version + ", which " + why}, err
		}
		if !newer(r) {
			return Decision{Reason: fmt.Sprintf("pinned to %s; running %s", r.Version, req.Running)}, nil
		}
		return Decision{Release: r}, nil
	}
	ro, m, err := s.store.DeviceRollout(ctx, d.ID)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		return Decision{Reason: fmt.Sprintf("running %s; no rollout includes this device", req.Running), operatorsOnly: true}, nil
	}
	if err != nil {
		return Decision{}, err
	}
	r, err := s.release(ctx, ro.ReleaseID)
	if fota.ErrorCode(err) == fota.ENOTFOUND || ro.ReleaseID == 0 {
		// A completed rollout does not keep its release from deletion.
		return Decision{Reason: fmt.Sprintf("running %s; the release of rollout %d (%s) was deleted", req.Running, ro.ID, ro.ReleaseVersion), operatorsOnly: true}, nil
	}
	if err != nil {
		return Decision{}, err
	}
	name := fmt.Sprintf("rollout %d of %s", ro.ID, r.Version)
	if !newer(r) {
		return Decision{Reason: fmt.Sprintf("running %s; %s is not newer", req.Running, name), operatorsOnly: true}, nil
	}
	dec := Decision{Release: r, RolloutID: ro.ID, operatorsOnly: true}
	switch {
	case ro.State == fota.RolloutPaused && m.Wave <= ro.Wave:
		// A download under way may finish; nothing new starts.
		dec.ResumeOnly, dec.Reason = true, name+" is paused"
	case ro.State == fota.RolloutScheduled:
		return Decision{Reason: fmt.Sprintf("%s starts at %s", name, ro.Start.UTC().Format(time.RFC3339)), operatorsOnly: true}, nil
	case !fota.RolloutOffers(ro.State) && ro.Reason != "":
		return Decision{Reason: fmt.Sprintf("%s is %s: %s", name, ro.State, ro.Reason), operatorsOnly: true}, nil
	case !fota.RolloutOffers(ro.State):
		return Decision{Reason: fmt.Sprintf("%s is %s", name, ro.State), operatorsOnly: true}, nil
	case m.Wave > ro.Wave:
		return Decision{Reason: fmt.Sprintf("this device is in wave %d of %s, which opens after wave %d passes", m.Wave, name, ro.Wave), operatorsOnly: true}, nil
	}
	if why, err := s.withheld(ctx, req, r); why != "" || err != nil {
		return Decision{Reason: "release " + r.Version + " " + why}, err
	}
	windows, err := s.windows.get(ro)
	if err != nil {
		return Decision{}, err
	}
	if len(windows) > 0 {
		start, end := NextWindow(windows, req.Now)
		dec.InstallUntil = end
		if req.Now.Before(start) {
			dec.InstallAfter = start
			if !dec.ResumeOnly {
				dec.ResumeOnly = true
				dec.Reason = fmt.Sprintf("%s offers only in its maintenance windows; the next opens at %s", name, start.UTC().Format(time.RFC3339))
			}
		}
	}
	return dec, nil
}

// withheld says why r is not offered to the device whatever its source,
// or "".
func (s *Service) withheld(ctx context.Context, req Request, r *fota.Release) (string, error) {
	if !r.Withdrawn.IsZero() {
		return "was withdrawn; an operator pins another release or starts another rollout", nil
	}
	rejected, err := s.store.RejectedReleases(ctx, req.Device.ID)
	if err != nil {
		return "", err
	}
	for _, id := range rejected {
		if id == r.ID {
			return "this device rolled back from or refused; it is not offered again", nil
		}
	}
	// Backoffs come from unauthenticated reports, so they bind only the
	// API those came on: a forged report cannot hold back a native update.
	if req.API != fota.APIEcoWatt {
		return "", nil
	}
	backoffs, err := s.store.Backoffs(ctx, req.Device.ID)
	if err != nil {
		return "", err
	}
	for _, b := range backoffs {
		if b.ReleaseID == r.ID && b.Until.After(req.Now) {
			return fmt.Sprintf("failed on this device and is held back until %s (an operator can clear it: fota device backoff --id %s --clear)",
				b.Until.UTC().Format(time.RFC3339), req.Device.ID), nil
		}
	}
	return "", nil
}

// windowCache keeps each rollout's maintenance windows parsed: they are
// fixed when the rollout is created.
type windowCache struct {
	mu   sync.Mutex
	byID map[int64][]Window
}

func (c *windowCache) get(r *fota.Rollout) ([]Window, error) {
	if len(r.Windows) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ws, ok := c.byID[r.ID]; ok {
		return ws, nil
	}
	ws := make([]Window, 0, len(r.Windows))
	for _, spec := range r.Windows {
		w, err := ParseWindow(spec)
		if err != nil {
			return nil, fmt.Errorf("rollout %d: window %q: %w", r.ID, spec, err)
		}
		ws = append(ws, w)
	}
	if c.byID == nil || len(c.byID) > 1024 {
		c.byID = map[int64][]Window{}
	}
	c.byID[r.ID] = ws
	return ws, nil
}
