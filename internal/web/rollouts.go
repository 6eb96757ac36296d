package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

type rolloutRow struct {
	*fota.Rollout
	Done, Targeted int
}

func (d *Dashboard) rolloutsPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	rs, err := d.updates.Rollouts(r.Context())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	rows := make([]rolloutRow, 0, len(rs))
	for _, ro := range rs {
		row := rolloutRow{Rollout: ro}
		if len(ro.WaveEnds) > 0 {
			row.Targeted = ro.WaveEnds[len(ro.WaveEnds)-1]
		}
		rows = append(rows, row)
	}
	d.render(w, r, http.StatusOK, "rollouts", u, map[string]any{"Title": "Rollouts", "Rollouts": rows})
}

// rolloutForm is the create form's fields, kept to show them again with
// an error or a count.
type rolloutForm struct {
	Release, Selector, Devices, Waves, MaxFailures, MinOutcomes, Soak, SilentTimeout, Windows, Start string
	Supersede                                                                                        bool
}

func readRolloutForm(v url.Values) rolloutForm {
	return rolloutForm{Release: v.Get("release"), Selector: strings.TrimSpace(v.Get("selector")), Devices: v.Get("devices"),
		Waves: strings.TrimSpace(v.Get("waves")), MaxFailures: strings.TrimSpace(v.Get("max_failures")),
		MinOutcomes: strings.TrimSpace(v.Get("min_outcomes")), Soak: strings.TrimSpace(v.Get("soak")),
		SilentTimeout: strings.TrimSpace(v.Get("silent_timeout")), Windows: v.Get("windows"), Start: strings.TrimSpace(v.Get("start")),
		Supersede: v.Get("supersede") == "on"}
}

// releaseRef splits the form's "hardware/version".
func releaseRef(ref string) (hardware, version string) {
	hardware, version, ok := strings.Cut(ref, "/")
	if !ok {
		return "", ref
	}
	return hardware, version
}

// spec turns the form into what the update service takes; every field is
// checked there, as for the CLI and the admin API.
func (f rolloutForm) spec() (update.RolloutSpec, error) {
	hardware, version := releaseRef(f.Release)
	spec := update.RolloutSpec{Release: version, Hardware: hardware, Selector: f.Selector, Devices: fields(f.Devices),
		Waves: f.Waves, MaxFailures: f.MaxFailures, MinOutcomes: -1, Supersede: f.Supersede}
	if f.Release == "" {
		return spec, fota.Errorf(fota.EINVALID, "choose a release")
	}
	if f.MinOutcomes != "" {
		n, err := strconv.Atoi(f.MinOutcomes)
		if err != nil || n < 0 {
			return spec, fota.Errorf(fota.EINVALID, "minimum outcomes %q: want 0 or more", f.MinOutcomes)
		}
		spec.MinOutcomes = n
	}
	var err error
	if spec.Soak, err = formDuration("soak", f.Soak, true); err != nil {
		return spec, err
	}
	if spec.SilentTimeout, err = formDuration("silent timeout", f.SilentTimeout, false); err != nil {
		return spec, err
	}
	for line := range strings.Lines(f.Windows) {
		if w := strings.TrimSpace(line); w != "" {
			spec.Windows = append(spec.Windows, w)
		}
	}
	if f.Start != "" {
		t, err := time.Parse(time.RFC3339, f.Start)
		if err != nil {
			return spec, fota.Errorf(fota.EINVALID, "start %q: want a time like 2026-12-03T01:00:00Z", f.Start)
		}
		spec.Start = t
	}
	return spec, nil
}

// formDuration reads a duration field as the admin API does: "" is the
// default, "0" none where allowed (negative for the service).
func formDuration(field, v string, zeroOK bool) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	dur, err := time.ParseDuration(v)
	if err != nil || dur < 0 || dur > 365*24*time.Hour || dur == 0 && !zeroOK {
		return 0, fota.Errorf(fota.EINVALID, "%s %q: want a duration like 30m or 2h", field, v)
	}
	if dur == 0 {
		return -1, nil
	}
	return dur, nil
}

func (d *Dashboard) newRolloutPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	f := readRolloutForm(r.URL.Query())
	if f.Waves == "" && r.URL.Query().Get("release") == "" {
		f.Waves = "10%,50%,100%"
	}
	data := map[string]any{}
	if f.Release != "" {
		n, upToDate, err := d.count(r.Context(), f)
		if err != nil {
			data["CountError"] = fota.ErrorMessage(err)
		} else {
			data["Count"] = countText(n, upToDate)
		}
	}
	d.renderNewRollout(w, r, u, http.StatusOK, f, "", data)
}

func (d *Dashboard) renderNewRollout(w http.ResponseWriter, r *http.Request, u *viewer, status int, f rolloutForm, formError string, data map[string]any) {
	rels, err := d.store.Releases(r.Context(), "")
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	var choices []*fota.Release
	for i := len(rels) - 1; i >= 0; i-- {
		if rels[i].Withdrawn.IsZero() {
			choices = append(choices, rels[i])
		}
	}
	data["Title"], data["Form"], data["Releases"], data["FormError"] = "New rollout", f, choices, formError
	d.render(w, r, status, "newrollout", u, data)
}

func (d *Dashboard) count(ctx context.Context, f rolloutForm) (int, int, error) {
	hardware, version := releaseRef(f.Release)
	return d.updates.CountTargets(ctx, version, hardware, f.Selector, fields(f.Devices))
}

// fields splits a list of ids given with spaces, commas or line breaks.
func fields(s string) []string { return strings.Fields(strings.ReplaceAll(s, ",", " ")) }

func countText(n, upToDate int) string {
	s := fmt.Sprintf("%d devices match", n)
	if n == 1 {
		s = "1 device matches"
	}
	if upToDate > 0 {
		s += fmt.Sprintf(" (%d more run this release or newer and are left out)", upToDate)
	}
	return s
}

// countTargets answers the form's live count as the operator types.
func (d *Dashboard) countTargets(w http.ResponseWriter, r *http.Request, u *viewer) {
	f := readRolloutForm(r.URL.Query())
	var out struct {
		Count int    `json:"count"`
		Text  string `json:"text"`
		Error string `json:"error,omitempty"`
	}
	n, upToDate, err := d.count(r.Context(), f)
	if err != nil {
		if fota.ErrorCode(err) == fota.EINTERNAL {
			d.log.Error("count rollout targets", "error", err)
		}
		out.Error = fota.ErrorMessage(err)
	} else {
		out.Count, out.Text = n, countText(n, upToDate)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (d *Dashboard) createRollout(w http.ResponseWriter, r *http.Request, u *viewer) {
	f := readRolloutForm(r.PostForm)
	spec, err := f.spec()
	if err != nil {
		d.renderNewRollout(w, r, u, d.statusOf(err), f, fota.ErrorMessage(err), map[string]any{})
		return
	}
	ro, upToDate, err := d.updates.CreateRollout(u.ctxFor(r), spec)
	if err != nil {
		d.renderNewRollout(w, r, u, d.statusOf(err), f, fota.ErrorMessage(err), map[string]any{})
		return
	}
	targeted := 0
	if len(ro.WaveEnds) > 0 {
		targeted = ro.WaveEnds[len(ro.WaveEnds)-1]
	}
	// The state is left out: the page below says it, and keeps saying it
	// as it changes.
	msg := fmt.Sprintf("Rollout %d of %s created: %s in %s.", ro.ID, ro.ReleaseVersion, plural(targeted, "device"), plural(len(ro.WaveEnds), "wave"))
	if upToDate > 0 {
		msg += fmt.Sprintf(" %s already run it or newer and were left out.", plural(upToDate, "device"))
	}
	d.redirectWith(w, r, fmt.Sprintf("/rollouts/%d", ro.ID), msg)
}

// waveView is one wave's bar on the rollout page.
type waveView struct {
	fota.WaveTally
	Open                         bool
	Eligible, Done, InProgress   int
	ConfirmedW, FailedW, ActiveW float64 // bar widths, percent of Eligible
	DonePercent                  float64
}

// rolloutView is the live part of the rollout page: state, gate, waves,
// failing devices. One render serves every dashboard watching it, so it
// holds nothing of the user's.
type rolloutView struct {
	R        *fota.Rollout
	Verdict  update.Verdict
	Waves    []waveView
	Total    waveView
	Failing  []*fota.RolloutMember
	MoreFail int
	// Traffic is what the rollout's sessions put on the wire.
	Traffic fota.Traffic
	// DeltaSaved is the share of the delta sessions' full-image bytes
	// their patches did not need, in percent.
	DeltaSaved float64
}

// liveRollout is what the rollout page's live section is drawn from:
// the rollout and, for those who may act on it, its buttons. Pushed
// renders are shared by every watcher of a role, so they carry no CSRF
// token: the page's script fills in its own.
type liveRollout struct {
	V       *rolloutView
	Operate bool
	CSRF    string
}

// maxFailingShown bounds the failing devices listed; the rest are counted.
const maxFailingShown = 100

func (d *Dashboard) rolloutView(ctx context.Context, id int64) (*rolloutView, error) {
	v, err := d.updates.Rollout(ctx, id, true)
	if err != nil {
		return nil, err
	}
	out := &rolloutView{R: v.Rollout, Verdict: v.Verdict}
	if out.Traffic, err = d.store.Traffic(ctx, fota.TrafficFilter{RolloutID: id}); err != nil {
		return nil, err
	}
	out.DeltaSaved = 100 * out.Traffic.DeltaSaved()
	for _, t := range v.Tally {
		out.Waves = append(out.Waves, makeWave(t, t.Wave <= v.Rollout.Wave))
	}
	out.Total = makeWave(fota.SumTallies(v.Tally), true)
	for _, m := range v.Members {
		if m.State == fota.MemberFailed || m.State == fota.MemberSilent {
			if len(out.Failing) < maxFailingShown {
				out.Failing = append(out.Failing, m)
			} else {
				out.MoreFail++
			}
		}
	}
	return out, nil
}

func makeWave(t fota.WaveTally, open bool) waveView {
	w := waveView{WaveTally: t, Open: open}
	w.Eligible = t.Members - t.Superseded - t.Removed
	w.Done = t.Confirmed + t.Failed + t.Accepted
	w.InProgress = t.Offered - t.Silent
	if w.Eligible > 0 {
		w.ConfirmedW = percent(t.Confirmed, w.Eligible)
		w.FailedW = percent(t.Failed+t.Accepted+t.Silent, w.Eligible)
		w.ActiveW = percent(w.InProgress, w.Eligible)
		w.DonePercent = percent(w.Done, w.Eligible)
	}
	return w
}

func parseRolloutID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fota.Errorf(fota.ENOTFOUND, "no rollout %q", r.PathValue("id"))
	}
	return id, nil
}

func (d *Dashboard) rolloutPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	id, err := parseRolloutID(r)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	v, err := d.rolloutView(r.Context(), id)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	d.render(w, r, http.StatusOK, "rollout", u, map[string]any{"Title": fmt.Sprintf("Rollout %d", id), "V": v,
		"Live":        liveRollout{V: v, Operate: u.Can(fota.RoleOperator), CSRF: u.CSRF},
		"MaxFailures": update.FormatMaxFailures(v.R.MaxFailuresPercent, v.R.MaxFailures)})
}

// rolloutAction pauses, resumes or aborts.
func (d *Dashboard) rolloutAction(w http.ResponseWriter, r *http.Request, u *viewer) {
	id, err := parseRolloutID(r)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	to := fmt.Sprintf("/rollouts/%d", id)
	reason, err := readReason(r)
	if err != nil {
		d.redirectWith(w, r, to, fota.ErrorMessage(err))
		return
	}
	ctx := u.ctxFor(r)
	var done string
	switch r.PathValue("action") {
	case "pause":
		done = "paused: no new device is offered the release"
		_, err = d.updates.PauseRollout(ctx, id, reason)
	case "resume":
		done = "resumed"
		_, err = d.updates.ResumeRollout(ctx, id)
	case "abort":
		if reason == "" {
			d.redirectWith(w, r, to, "Not aborted: say why in the reason box (it is recorded, and an abort cannot be undone).")
			return
		}
		done = "aborted: devices keep what they run"
		_, err = d.updates.AbortRollout(ctx, id, reason)
	default:
		d.errorPage(w, r, u, fota.Errorf(fota.ENOTFOUND, "no rollout action %q: pause, resume or abort", r.PathValue("action")))
		return
	}
	if err != nil {
		d.redirectWith(w, r, to, "Not done: "+fota.ErrorMessage(err))
		return
	}
	d.redirectWith(w, r, to, fmt.Sprintf("Rollout %d %s.", id, done))
}
