package update

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// Rollout defaults.
const (
	DefaultWaves         = "100%"
	DefaultSoak          = time.Hour
	DefaultSilentTimeout = time.Hour
	DefaultMinOutcomes   = 1
	// DefaultRolloutTick is how often RunRollouts opens waves and checks
	// gates; outcomes check their rollout's gate at once besides.
	DefaultRolloutTick = 5 * time.Second
)

// RolloutSpec is what an operator asks for.
type RolloutSpec struct {
	Release  string // version
	Hardware string // "" when only one hardware has the version
	// Selector or Devices narrow the target; neither: every device of the
	// hardware.
	Selector      string
	Devices       []string
	Waves         string        // DefaultWaves when ""
	Soak          time.Duration // DefaultSoak when zero; negative: none
	MaxFailures   string        // ParseMaxFailures' syntax; "" for its default
	MinOutcomes   int           // DefaultMinOutcomes when < 0
	SilentTimeout time.Duration // DefaultSilentTimeout when zero
	Windows       []string
	Start         time.Time // zero: now
	Supersede     bool
}

// CreateRollout starts a rollout: it resolves the release and the target,
// fixes each device's wave and stores it all, refusing (ECONFLICT) to
// take devices another rollout holds unless spec.Supersede. Devices that
// already run the release or a newer one are left out (they could never
// have an outcome, and the gate would wait for them): it returns how many.
func (s *Service) CreateRollout(ctx context.Context, spec RolloutSpec) (*fota.Rollout, int, error) {
	rel, err := s.rolloutRelease(ctx, spec.Release, spec.Hardware)
	if err != nil {
		return nil, 0, err
	}
	sel, err := ParseSelector(spec.Selector)
	if err != nil {
		return nil, 0, err
	}
	if !sel.Empty() && len(spec.Devices) > 0 {
		return nil, 0, fota.Errorf(fota.EINVALID, "give a selector (--selector) or a list of devices (--devices), not both")
	}
	if spec.Waves == "" {
		spec.Waves = DefaultWaves
	}
	waves, err := ParseWaves(spec.Waves)
	if err != nil {
		return nil, 0, err
	}
	pct, count, err := ParseMaxFailures(spec.MaxFailures)
	if err != nil {
		return nil, 0, err
	}
	for _, w := range spec.Windows {
		if _, err := ParseWindow(w); err != nil {
			return nil, 0, err
		}
	}
	switch {
	case spec.Soak == 0:
		spec.Soak = DefaultSoak
	case spec.Soak < 0:
		spec.Soak = 0
	}
	if spec.SilentTimeout <= 0 {
		spec.SilentTimeout = DefaultSilentTimeout
	}
	if spec.MinOutcomes < 0 {
		spec.MinOutcomes = DefaultMinOutcomes
	}
	targets, upToDate, err := s.rolloutTargets(ctx, rel, sel, spec.Devices)
	if err != nil {
		return nil, 0, err
	}
	now := s.now()
	ends := WaveEnds(waves, len(targets))
	r := &fota.Rollout{ReleaseID: rel.ID, ReleaseVersion: rel.Version, Hardware: rel.Hardware, Selector: sel.String(),
		DeviceIDs: spec.Devices, Waves: spec.Waves, WaveEnds: ends, Soak: spec.Soak, MaxFailuresPercent: pct, MaxFailures: count,
		MinOutcomes: spec.MinOutcomes, SilentTimeout: spec.SilentTimeout, Windows: spec.Windows, Start: spec.Start,
		State: fota.RolloutRunning, Wave: 1, WaveOpened: now}
	if spec.Start.After(now) {
		r.State, r.Wave, r.WaveOpened = fota.RolloutScheduled, 0, time.Time{}
	}
	waveOf := AssignWaves(waveKey(r), targets, ends)
	members := make([]*fota.RolloutMember, 0, len(waveOf))
	for _, id := range targets {
		if w := waveOf[id]; w > 0 {
			members = append(members, &fota.RolloutMember{DeviceID: id, Wave: w, State: fota.MemberPending})
		}
	}
	if err := s.store.CreateRollout(ctx, r, members, spec.Supersede); err != nil {
		return nil, 0, err
	}
	s.log.Info("rollout created", "rollout_id", r.ID, "release_version", rel.Version, "hardware", rel.Hardware, "devices", len(members),
		"waves", r.Waves, "state", r.State, "up_to_date", upToDate)
	if r.State == fota.RolloutRunning && s.inWindow(r) {
		var first []string
		for _, m := range members {
			if m.Wave == 1 {
				first = append(first, m.DeviceID)
			}
		}
		s.notify(first, protocol.NotifyRollout, r.ID)
	}
	return r, upToDate, nil
}

// waveKey is what a rollout's waves are drawn by: its release, so that a
// rollout of the same release made again (after an abort, say) puts every
// device in the same wave as before.
func waveKey(r *fota.Rollout) int64 { return r.ReleaseID }

// rolloutRelease finds the release a rollout names.
func (s *Service) rolloutRelease(ctx context.Context, version, hardware string) (*fota.Release, error) {
	if _, err := semver.Parse(version); err != nil {
		return nil, fota.Errorf(fota.EINVALID, "release %q is not a semantic version like 1.0.5", truncate(version, 40))
	}
	var found []*fota.Release
	all, err := s.store.Releases(ctx, hardware)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if sameVersion(r.Version, version) && r.Version == version {
			found = append(found, r)
		}
	}
	switch {
	case len(found) == 0 && hardware != "":
		return nil, fota.Errorf(fota.ENOTFOUND, "no release %s is published for %s; publish it first", version, hardware)
	case len(found) == 0:
		return nil, fota.Errorf(fota.ENOTFOUND, "no release %s is published; publish it first", version)
	case len(found) > 1:
		var hw []string
		for _, r := range found {
			hw = append(hw, r.Hardware)
		}
		return nil, fota.Errorf(fota.EINVALID, "release %s is published for %s: say which with --hardware", version, strings.Join(hw, " and "))
	}
	rel := found[0]
	if !rel.Withdrawn.IsZero() {
		return nil, fota.Errorf(fota.EINVALID, "release %s for %s was withdrawn; roll out another release", rel.Version, rel.Hardware)
	}
	return rel, nil
}

// CountTargets says how many devices a rollout of release (hardware ""
// when only one has it) to selector or to the listed devices would take
// now, and how many it would leave out as up to date: the dashboard's live
// count as an operator types. It refuses what CreateRollout would.
func (s *Service) CountTargets(ctx context.Context, release, hardware, selector string, devices []string) (targets, upToDate int, err error) {
	rel, err := s.rolloutRelease(ctx, release, hardware)
	if err != nil {
		return 0, 0, err
	}
	sel, err := ParseSelector(selector)
	if err != nil {
		return 0, 0, err
	}
	if !sel.Empty() && len(devices) > 0 {
		return 0, 0, fota.Errorf(fota.EINVALID, "give a selector (--selector) or a list of devices (--devices), not both")
	}
	ids, upToDate, err := s.rolloutTargets(ctx, rel, sel, devices)
	return len(ids), upToDate, err
}

// rolloutTargets lists the ids of the registered devices of rel's
// hardware that the selector or the list names, leaving out (and
// counting) those that run rel or newer.
func (s *Service) rolloutTargets(ctx context.Context, rel *fota.Release, sel Selector, ids []string) ([]string, int, error) {
	hardware := rel.Hardware
	devices, err := s.store.Devices(ctx)
	if err != nil {
		return nil, 0, err
	}
	relV, err := semver.Parse(rel.Version)
	if err != nil {
		return nil, 0, fmt.Errorf("release %d: version %q: %w", rel.ID, rel.Version, err)
	}
	upToDate := 0
	current := func(d *fota.Device) bool {
		v, err := semver.Parse(d.Version)
		if err == nil && semver.Compare(v, relV) >= 0 {
			upToDate++
			return true
		}
		return false
	}
	if len(ids) > 0 {
		byID := make(map[string]*fota.Device, len(devices))
		for _, d := range devices {
			byID[d.ID] = d
		}
		var unknown, other []string
		seen := map[string]bool{}
		var targets []string
		for _, id := range ids {
			d, ok := byID[id]
			switch {
			case seen[id]:
				continue
			case !ok:
				unknown = append(unknown, id)
			case d.Hardware != hardware:
				other = append(other, fmt.Sprintf("%s (%s)", id, d.Hardware))
			case current(d):
			default:
				targets = append(targets, id)
			}
			seen[id] = true
		}
		if len(unknown) > 0 {
			return nil, 0, fota.Errorf(fota.EINVALID, "unknown devices: %s; register them first (fota device add)", listSome(unknown))
		}
		if len(other) > 0 {
			return nil, 0, fota.Errorf(fota.EINVALID, "devices of other hardware than %s: %s", hardware, listSome(other))
		}
		return targets, upToDate, nil
	}
	var targets []string
	for _, d := range devices {
		if d.Hardware == hardware && sel.Matches(d.Labels) && !current(d) {
			targets = append(targets, d.ID)
		}
	}
	return targets, upToDate, nil
}

func listSome(ids []string) string {
	if len(ids) > 10 {
		return strings.Join(ids[:10], ", ") + fmt.Sprintf(" and %d more", len(ids)-10)
	}
	return strings.Join(ids, ", ")
}

// JoinRollouts adds a device registered or relabelled after rollouts of
// its hardware started to the newest one whose selector (or "every
// device") takes it and whose last wave reaches everyone targeted: a
// rollout to a share of the fleet stays that share. Its wave is drawn as
// at creation. A device already in a rollout that holds it stays there.
func (s *Service) JoinRollouts(ctx context.Context, d *fota.Device) error {
	rollouts, err := s.store.Rollouts(ctx) // newest first
	if err != nil {
		return err
	}
	for _, r := range rollouts {
		if r.Hardware != d.Hardware || len(r.DeviceIDs) > 0 || !(fota.RolloutHolds(r.State) || fota.RolloutOffers(r.State)) {
			continue
		}
		sel, err := ParseSelector(r.Selector)
		if err != nil || !sel.Matches(d.Labels) {
			continue
		}
		waves, err := ParseWaves(r.Waves)
		if err != nil || len(r.WaveEnds) == 0 || !reachesAll(waves[len(waves)-1]) {
			continue
		}
		targeted := r.WaveEnds[len(r.WaveEnds)-1]
		w := JoinWave(waveKey(r), d.ID, r.WaveEnds, targeted)
		if w == 0 {
			return nil
		}
		joined, err := s.store.JoinRollout(ctx, &fota.RolloutMember{RolloutID: r.ID, DeviceID: d.ID, Wave: w, State: fota.MemberPending})
		if err != nil {
			return fmt.Errorf("join device %s to rollout %d: %w", d.ID, r.ID, err)
		}
		if joined {
			s.log.Info("device joined rollout", "device_id", d.ID, "rollout_id", r.ID, "wave", w)
		}
		return nil
	}
	return nil
}

func reachesAll(w WaveSpec) bool { return w.All || w.Percent >= 100 }

// RolloutView is a rollout with its members and counts, as `rollout show`
// prints it.
type RolloutView struct {
	Rollout *fota.Rollout
	Tally   []fota.WaveTally
	Members []*fota.RolloutMember // nil unless asked for
	// Verdict is what the gate says now.
	Verdict Verdict
}

// Rollout reads a rollout with its tally, and its members if withMembers.
func (s *Service) Rollout(ctx context.Context, id int64, withMembers bool) (*RolloutView, error) {
	r, err := s.store.Rollout(ctx, id)
	if err != nil {
		return nil, err
	}
	now := s.now()
	v := &RolloutView{Rollout: r}
	if v.Tally, err = s.store.RolloutTally(ctx, id, now.Add(-r.SilentTimeout)); err != nil {
		return nil, err
	}
	if withMembers {
		if v.Members, err = s.store.RolloutMembers(ctx, id, now.Add(-r.SilentTimeout)); err != nil {
			return nil, err
		}
	}
	v.Verdict = Evaluate(r, v.Tally, now)
	if ws, err := s.windows.get(r); err == nil && len(ws) > 0 && fota.RolloutOffers(r.State) {
		if start, _ := NextWindow(ws, now); now.Before(start) {
			v.Verdict.Reason += fmt.Sprintf("; outside its maintenance windows, nothing new is offered until %s", start.UTC().Format(time.RFC3339))
		}
	}
	return v, nil
}

// Rollouts lists rollouts, newest first.
func (s *Service) Rollouts(ctx context.Context) ([]*fota.Rollout, error) {
	return s.store.Rollouts(ctx)
}

// PauseRollout stops a rollout offering its release to devices that have
// not started; downloads under way may finish.
func (s *Service) PauseRollout(ctx context.Context, id int64, reason string) (*fota.Rollout, error) {
	return s.operate(ctx, id, "pause", func(r *fota.Rollout) (fota.RolloutTransition, error) {
		if r.State != fota.RolloutRunning && r.State != fota.RolloutScheduled {
			return fota.RolloutTransition{}, fota.Errorf(fota.ECONFLICT, "rollout %d is %s; only a running or scheduled rollout can be paused", r.ID, r.State)
		}
		return fota.RolloutTransition{State: fota.RolloutPaused, Wave: r.Wave, Reason: orDefault(reason, "paused by an operator"),
			Event: fota.EventRolloutPaused, Detail: orDefault(reason, "paused")}, nil
	})
}

// ResumeRollout lets a paused or halted rollout go on. Resuming a halted
// one accepts the failures that halted it: the gate counts only new ones.
func (s *Service) ResumeRollout(ctx context.Context, id int64) (*fota.Rollout, error) {
	return s.operate(ctx, id, "resume", func(r *fota.Rollout) (fota.RolloutTransition, error) {
		t := fota.RolloutTransition{State: fota.RolloutRunning, Wave: r.Wave, GateBase: r.GateBase, Event: fota.EventRolloutResumed}
		switch r.State {
		case fota.RolloutPaused:
			if r.Wave == 0 {
				t.State = fota.RolloutScheduled
			}
			t.Detail = "resumed"
		case fota.RolloutHalted:
			// The failed devices are accepted as they are, by device, so
			// one that later confirms does not hide a new failure.
			t.AcceptFailures = true
			t.Detail = "resumed after a halt; the failures that halted it are accepted, the gate counts new ones"
		default:
			return t, fota.Errorf(fota.ECONFLICT, "rollout %d is %s; only a paused or halted rollout can be resumed", r.ID, r.State)
		}
		return t, nil
	})
}

// AbortRollout ends a rollout for good: nothing more is offered, and the
// downloads under way end (their devices keep the image they run).
func (s *Service) AbortRollout(ctx context.Context, id int64, reason string) (*fota.Rollout, error) {
	return s.operate(ctx, id, "abort", func(r *fota.Rollout) (fota.RolloutTransition, error) {
		if r.State == fota.RolloutAborted {
			return fota.RolloutTransition{}, fota.Errorf(fota.ECONFLICT, "rollout %d is aborted already", r.ID)
		}
		why := orDefault(reason, "aborted by an operator")
		return fota.RolloutTransition{State: fota.RolloutAborted, Wave: r.Wave, GateBase: r.GateBase, Reason: why,
			Event: fota.EventRolloutAborted, Detail: why, EndSessions: true}, nil
	})
}

// operate applies an operator's transition, made by next from the
// rollout as read; it retries when a replica moved the rollout meanwhile
// (a wave opened, say), so the operator's intent is applied to where the
// rollout is now.
func (s *Service) operate(ctx context.Context, id int64, what string, next func(*fota.Rollout) (fota.RolloutTransition, error)) (*fota.Rollout, error) {
	for attempt := 0; ; attempt++ {
		r, err := s.store.Rollout(ctx, id)
		if err != nil {
			return nil, err
		}
		t, err := next(r)
		if err != nil {
			return nil, err
		}
		t.FromState, t.FromWave = r.State, r.Wave
		ended, err := s.store.TransitionRollout(ctx, id, t)
		if fota.ErrorCode(err) == fota.ECONFLICT && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s rollout %d: %w", what, id, err)
		}
		s.forgetSessions(ended)
		s.log.Info("rollout "+t.State, "rollout_id", id, "actor", fota.ActorFrom(ctx), "sessions_ended", len(ended))
		s.notifyTransition(r, t, ended)
		return s.store.Rollout(ctx, id)
	}
}

func (s *Service) forgetSessions(ended []*fota.Session) {
	for _, sess := range ended {
		s.cache.Forget(sess)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// RunRollouts opens waves and checks gates every tick until ctx ends.
// Every replica may run it: transitions are compare-and-set, so each
// happens once.
func (s *Service) RunRollouts(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultRolloutTick
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.TickRollouts(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("rollout tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// TickRollouts starts scheduled rollouts that are due and applies the
// gate's verdict to every running one.
func (s *Service) TickRollouts(ctx context.Context) error {
	rollouts, err := s.store.Rollouts(ctx)
	if err != nil {
		return fmt.Errorf("list rollouts: %w", err)
	}
	for _, r := range rollouts {
		if r.State != fota.RolloutScheduled && r.State != fota.RolloutRunning {
			continue
		}
		if err := s.evaluateRollout(ctx, r); err != nil {
			return fmt.Errorf("rollout %d: %w", r.ID, err)
		}
	}
	s.notifyOpenedWindows(rollouts)
	return nil
}

// evaluateRolloutID is evaluateRollout after an outcome: errors are
// logged, since the outcome itself was recorded; the tick tries again.
func (s *Service) evaluateRolloutID(ctx context.Context, id int64) {
	r, err := s.store.Rollout(ctx, id)
	if err == nil && r.State == fota.RolloutRunning {
		err = s.evaluateRollout(ctx, r)
	}
	if err != nil {
		s.log.Error("rollout gate after an outcome", "rollout_id", id, "err", err)
	}
}

// evaluateRollout moves r on as its start time and gate say.
func (s *Service) evaluateRollout(ctx context.Context, r *fota.Rollout) error {
	now := s.now()
	t := fota.RolloutTransition{FromState: r.State, FromWave: r.Wave, GateBase: r.GateBase}
	switch r.State {
	case fota.RolloutScheduled:
		if now.Before(r.Start) {
			return nil
		}
		t.State, t.Wave, t.Event, t.Detail = fota.RolloutRunning, 1, fota.EventRolloutWaveOpened, "wave 1 opened: the rollout started"
	case fota.RolloutRunning:
		tally, err := s.store.RolloutTally(ctx, r.ID, now.Add(-r.SilentTimeout))
		if err != nil {
			return err
		}
		v := Evaluate(r, tally, now)
		switch v.Action {
		case GateHalt:
			t.State, t.Wave, t.Event, t.EndSessions = fota.RolloutHalted, r.Wave, fota.EventRolloutHalted, true
			t.Reason = "halted by its health gate: " + v.Reason
			t.Detail = v.Reason
		case GateAdvance:
			t.State, t.Wave, t.Event = fota.RolloutRunning, r.Wave+1, fota.EventRolloutWaveOpened
			t.Detail = fmt.Sprintf("wave %d opened: %s", r.Wave+1, v.Reason)
		case GateComplete:
			t.State, t.Wave, t.Event, t.Detail = fota.RolloutCompleted, r.Wave, fota.EventRolloutCompleted, v.Reason
		default:
			return nil
		}
	default:
		return nil
	}
	ended, err := s.store.TransitionRollout(ctx, r.ID, t)
	if fota.ErrorCode(err) == fota.ECONFLICT {
		return nil // another replica (or request) moved it first
	}
	if err != nil {
		return err
	}
	s.forgetSessions(ended)
	level := s.log.Info
	if t.State == fota.RolloutHalted {
		level = s.log.Warn
	}
	level("rollout "+t.State, "rollout_id", r.ID, "release_version", r.ReleaseVersion, "wave", t.Wave, "detail", t.Detail, "sessions_ended", len(ended))
	s.notifyTransition(r, t, ended)
	return nil
}

// SetLabels changes a device's labels; if it now matches rollouts it was
// not in, it joins them.
func (s *Service) SetLabels(ctx context.Context, id string, set map[string]string, remove []string) (*fota.Device, error) {
	d, err := s.store.SetDeviceLabels(ctx, id, set, remove)
	if err != nil {
		return nil, err
	}
	s.cache.ForgetDevice(id)
	s.log.Info("device labels changed", "device_id", id, "labels", fota.FormatLabels(d.Labels))
	if err := s.JoinRollouts(ctx, d); err != nil {
		return nil, err
	}
	return d, nil
}

// FormatMaxFailures writes a gate's limits as ParseMaxFailures reads them.
func FormatMaxFailures(percent float64, count int) string {
	switch {
	case percent >= 0 && count >= 0:
		return fmt.Sprintf("%s%%,%d", strconv.FormatFloat(percent, 'f', -1, 64), count)
	case percent >= 0:
		return strconv.FormatFloat(percent, 'f', -1, 64) + "%"
	case count >= 0:
		return strconv.Itoa(count)
	}
	return "none"
}
