package server

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
)

// maxRolloutReason bounds an operator's reason, which events carry.
const maxRolloutReason = 200

func (s *Server) createRollout(w http.ResponseWriter, r *http.Request) error {
	var req protocol.CreateRollout
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	spec := update.RolloutSpec{Release: req.Release, Hardware: req.Hardware, Selector: req.Selector, Devices: req.Devices,
		Waves: req.Waves, MaxFailures: req.MaxFailures, MinOutcomes: -1, Windows: req.Windows, Start: req.Start, Supersede: req.Supersede}
	if req.MinOutcomes != nil {
		if *req.MinOutcomes < 0 {
			return fota.Errorf(fota.EINVALID, "min_outcomes %d: want 0 or more", *req.MinOutcomes)
		}
		spec.MinOutcomes = *req.MinOutcomes
	}
	var err error
	if spec.Soak, err = parseDuration("soak", req.Soak, true); err != nil {
		return err
	}
	if spec.SilentTimeout, err = parseDuration("silent_timeout", req.SilentTimeout, false); err != nil {
		return err
	}
	ro, upToDate, err := s.updates.CreateRollout(r.Context(), spec)
	if err != nil {
		return err
	}
	v, err := s.updates.Rollout(r.Context(), ro.ID, false)
	if err != nil {
		return err
	}
	out := viewRollout(v)
	out.UpToDate = upToDate
	return writeJSON(w, http.StatusCreated, out)
}

// parseDuration reads a duration field: "" is the default (zero); "0"
// means none where zero is allowed, which the service reads as negative.
func parseDuration(field, v string, zeroOK bool) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > 365*24*time.Hour || d == 0 && !zeroOK {
		return 0, fota.Errorf(fota.EINVALID, "%s %q: want a duration like 30m or 2h", field, truncate(v, 20))
	}
	if d == 0 {
		return -1, nil
	}
	return d, nil
}

func rolloutID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fota.Errorf(fota.EINVALID, "rollout id %q: want a number (fota rollout list shows them)", truncate(r.PathValue("id"), 20))
	}
	return id, nil
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.updates.Rollouts(r.Context())
	if err != nil {
		return err
	}
	out := make([]protocol.Rollout, 0, len(rs))
	for _, ro := range rs {
		v, err := s.updates.Rollout(r.Context(), ro.ID, false)
		if err != nil {
			return err
		}
		out = append(out, viewRollout(v))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	v, err := s.updates.Rollout(r.Context(), id, true)
	if err != nil {
		return err
	}
	traffic, err := s.store.Traffic(r.Context(), fota.TrafficFilter{RolloutID: id})
	if err != nil {
		return err
	}
	out := viewRollout(v)
	out.Traffic = viewTraffic(traffic)
	return writeJSON(w, http.StatusOK, out)
}

// rolloutAction is pause, resume or abort.
func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request) error {
	id, err := rolloutID(r)
	if err != nil {
		return err
	}
	var req protocol.RolloutAction
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	if !fota.PlainText(req.Reason) || len(req.Reason) > maxRolloutReason {
		return fota.Errorf(fota.EINVALID, "reason must be plain text of at most %d bytes", maxRolloutReason)
	}
	switch action := r.PathValue("action"); action {
	case "pause":
		_, err = s.updates.PauseRollout(r.Context(), id, req.Reason)
	case "resume":
		_, err = s.updates.ResumeRollout(r.Context(), id)
	case "abort":
		_, err = s.updates.AbortRollout(r.Context(), id, req.Reason)
	default:
		return fota.Errorf(fota.ENOTFOUND, "no rollout action %q: pause, resume or abort", truncate(action, 20))
	}
	if err != nil {
		return err
	}
	v, err := s.updates.Rollout(r.Context(), id, false)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewRollout(v))
}

func viewRollout(v *update.RolloutView) protocol.Rollout {
	ro := v.Rollout
	out := protocol.Rollout{ID: ro.ID, Release: ro.ReleaseVersion, Hardware: ro.Hardware, State: ro.State, Wave: ro.Wave,
		Waves: len(ro.WaveEnds), WaveSpec: ro.Waves, WaveEnds: ro.WaveEnds, Reason: ro.Reason, Selector: ro.Selector, DeviceIDs: ro.DeviceIDs,
		Soak: ro.Soak.String(), MaxFailures: update.FormatMaxFailures(ro.MaxFailuresPercent, ro.MaxFailures), MinOutcomes: ro.MinOutcomes,
		SilentTimeout: ro.SilentTimeout.String(), Windows: ro.Windows, Gate: v.Verdict.Action, GateReason: v.Verdict.Reason,
		Start: ro.Start, WaveOpened: ro.WaveOpened, Created: ro.Created, Updated: ro.Updated, WaveCounts: []protocol.RolloutWave{}}
	for _, t := range v.Tally {
		out.WaveCounts = append(out.WaveCounts, protocol.RolloutWave{Wave: t.Wave, Open: t.Wave <= ro.Wave, Counts: viewCounts(t)})
	}
	out.Counts = viewCounts(fota.SumTallies(v.Tally))
	for _, m := range v.Members {
		out.Devices = append(out.Devices, protocol.RolloutDevice{ID: m.DeviceID, Wave: m.Wave, State: m.State, Reason: m.Reason, Offered: m.Offered})
	}
	return out
}

func viewCounts(t fota.WaveTally) protocol.RolloutCounts {
	return protocol.RolloutCounts{Targeted: t.Members, Pending: t.Pending, Offered: t.Offered, Downloading: t.Downloading,
		Confirmed: t.Confirmed, Failed: t.Failed, Accepted: t.Accepted, Silent: t.Silent, Superseded: t.Superseded, Removed: t.Removed}
}

// setLabels sets and removes a device's labels; a device that now
// matches a rollout's selector joins it.
func (s *Server) setLabels(w http.ResponseWriter, r *http.Request) error {
	var req protocol.SetLabels
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	// The store checks each label (fota.EditLabels).
	if len(req.Set) == 0 && len(req.Remove) == 0 {
		return fota.Errorf(fota.EINVALID, "nothing to change: give labels to set (key=value) or --remove key")
	}
	d, err := s.updates.SetLabels(r.Context(), r.PathValue("id"), req.Set, req.Remove)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewDevice(d))
}

// publishRollout is the ?rollout= of a publish: "all" makes a one-wave
// rollout of the new release to every device of its hardware, without a
// health gate, taking over from the rollouts that hold them; "" none.
func (s *Server) publishRollout(r *http.Request, rel *fota.Release) (*fota.Rollout, error) {
	if r.URL.Query().Get("rollout") != "all" {
		return nil, nil
	}
	// Today's behaviour, for those who want it: everyone at once, and no
	// gate to halt it.
	ro, _, err := s.updates.CreateRollout(r.Context(), update.RolloutSpec{Release: rel.Version, Hardware: rel.Hardware, Waves: "100%",
		MaxFailures: "none", MinOutcomes: -1, Supersede: true})
	if err != nil {
		return nil, fmt.Errorf("release %s published, but its rollout failed: %w", rel.Version, err)
	}
	return ro, nil
}

// checkPublishRollout refuses a publish's ?rollout= other than "" and
// "all" before the upload is read.
func checkPublishRollout(v string) error {
	if v != "" && v != "all" {
		return fota.Errorf(fota.EINVALID, "rollout=%q: the only rollout a publish makes is all (fota rollout create makes others)", truncate(v, 20))
	}
	return nil
}
