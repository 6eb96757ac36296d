package update

import (
	"context"
	"fmt"
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

// Decider picks the release a device should install, or none with a reason
// the device is told. Fleet rollouts replace this decision later.
type Decider interface {
	Decide(ctx context.Context, req Request) (*fota.Release, string, error)
}

// NewestRelease offers the device's pinned release if it has one, and
// otherwise the newest release (semantic-version order) for its hardware
// that is newer than what it runs, not withdrawn, and not held back from
// it: never one it
// rolled back from on the native API, and on the EcoWatt API not one
// backed off after a reported failure.
type NewestRelease struct {
	Store fota.Store
}

// Decide implements Decider.
func (n NewestRelease) Decide(ctx context.Context, req Request) (*fota.Release, string, error) {
	d := req.Device
	runningV, err := semver.Parse(req.Running)
	if err != nil {
		return nil, "", fota.Errorf(fota.EINVALID, "running version %q: %v", req.Running, err)
	}
	held, err := n.heldBack(ctx, req)
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
		if !r.Withdrawn.IsZero() {
			return nil, fmt.Sprintf("pinned to %s, which was withdrawn; an operator pins another release or unpins it", r.Version), nil
		}
		if why, ok := held[r.ID]; ok {
			return nil, fmt.Sprintf("pinned to %s, which %s", r.Version, why), nil
		}
		if !newer(r) {
			return nil, fmt.Sprintf("pinned to %s; running %s", r.Version, req.Running), nil
		}
		return r, "", nil
	}
	all, err := n.Store.Releases(ctx, d.Hardware)
	if err != nil {
		return nil, "", err
	}
	var best *fota.Release
	var bestV semver.Version
	skipped := ""
	for _, r := range all {
		v, err := semver.Parse(r.Version)
		if err != nil || semver.Compare(v, runningV) <= 0 {
			continue
		}
		if !r.Withdrawn.IsZero() {
			continue // as if never published: nothing to tell the device
		}
		if why, ok := held[r.ID]; ok {
			skipped = fmt.Sprintf("release %s %s", r.Version, why)
			continue
		}
		if best == nil || semver.Compare(v, bestV) > 0 {
			best, bestV = r, v
		}
	}
	if best == nil {
		if skipped != "" {
			return nil, fmt.Sprintf("running %s; %s", req.Running, skipped), nil
		}
		return nil, fmt.Sprintf("running %s; nothing newer is published for %s", req.Running, d.Hardware), nil
	}
	return best, "", nil
}

// heldBack maps the ids of releases not to offer to why not.
func (n NewestRelease) heldBack(ctx context.Context, req Request) (map[int64]string, error) {
	held := map[int64]string{}
	rejected, err := n.Store.RejectedReleases(ctx, req.Device.ID)
	if err != nil {
		return nil, err
	}
	for _, id := range rejected {
		held[id] = "this device rolled back from or refused; it is not offered again"
	}
	// Backoffs come from unauthenticated reports, so they bind only the
	// API those came on: a forged report cannot hold back a native update.
	if req.API != fota.APIEcoWatt {
		return held, nil
	}
	backoffs, err := n.Store.Backoffs(ctx, req.Device.ID)
	if err != nil {
		return nil, err
	}
	for _, b := range backoffs {
		if _, ok := held[b.ReleaseID]; !ok && b.Until.After(req.Now) {
			held[b.ReleaseID] = fmt.Sprintf("failed on this device and is held back until %s (an operator can clear it: fota device backoff --id %s --clear)",
				b.Until.UTC().Format(time.RFC3339), req.Device.ID)
		}
	}
	return held, nil
}
