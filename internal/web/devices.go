package web

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/semver"
)

// devicesPerPage bounds the devices list: a page of 10,000 rows helps no
// one and costs the browser.
const devicesPerPage = 100

type deviceRow struct {
	*fota.Device
	State   string
	Session *fota.Session
}

func (d *Dashboard) devicesPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	f, ferr := readFilter(r)
	devices, active, err := d.fleetDevices(r, ferr)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	now := d.now()
	var rows []deviceRow
	for _, dev := range devices {
		state := fleetState(dev, active, now, d.cfg.OnlineWithin)
		if f.matches(dev, state) {
			rows = append(rows, deviceRow{Device: dev, State: state, Session: active[dev.ID]})
		}
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	pages := max((len(rows)+devicesPerPage-1)/devicesPerPage, 1)
	page = min(max(page, 1), pages)
	shown := rows[(page-1)*devicesPerPage : min(page*devicesPerPage, len(rows))]
	link := func(p int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		return "/devices?" + q.Encode()
	}
	data := map[string]any{"Title": "Devices", "Rows": shown, "Matched": len(rows), "Filter": f, "States": fleetStates,
		"PageN": page, "Pages": pages}
	if page > 1 {
		data["Prev"] = link(page - 1)
	}
	if page < pages {
		data["Next"] = link(page + 1)
	}
	status := http.StatusOK
	if ferr != nil {
		data["FilterError"] = fota.ErrorMessage(ferr)
		status = http.StatusBadRequest
	}
	d.render(w, r, status, "devices", u, data)
}

// sessionRow is one of a device's update sessions, read from its events.
type sessionRow struct {
	ID, Version, API, State, Reason string
	RolloutID                       int64
	Opened, Updated                 *fota.Event
}

// sessionsFromEvents groups a device's events (newest first) by session:
// the first says when it opened, the newest where it ended and why.
func sessionsFromEvents(evs []*fota.Event) []*sessionRow {
	byID := map[string]*sessionRow{}
	var rows []*sessionRow
	for _, e := range evs {
		if e.SessionID == "" {
			continue
		}
		s := byID[e.SessionID]
		if s == nil {
			s = &sessionRow{ID: e.SessionID, Version: e.ReleaseVersion, API: e.API, State: e.Kind, Reason: e.Detail,
				RolloutID: e.RolloutID, Updated: e}
			if e.Kind == fota.EventProgress || e.Kind == fota.EventSessionOpened {
				s.Reason = ""
			}
			byID[e.SessionID] = s
			rows = append(rows, s)
		}
		s.Opened = e
	}
	return rows
}

func (d *Dashboard) devicePage(w http.ResponseWriter, r *http.Request, u *viewer) {
	d.renderDevice(w, r, u, http.StatusOK, "")
}

// renderDevice draws a device's page, with formError if a form failed;
// the labels typed into a failed form are shown again.
func (d *Dashboard) renderDevice(w http.ResponseWriter, r *http.Request, u *viewer, status int, formError string) {
	ctx := r.Context()
	dev, err := d.store.Device(ctx, r.PathValue("id"))
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	evs, err := d.store.Events(ctx, fota.EventFilter{DeviceID: dev.ID, Limit: 300})
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	active, err := d.store.ActiveSession(ctx, dev.ID)
	if err != nil && fota.ErrorCode(err) != fota.ENOTFOUND {
		d.errorPage(w, r, u, err)
		return
	}
	rels, err := d.store.Releases(ctx, dev.Hardware)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	// Offer pins only to what Pin would take: newer, not withdrawn, not
	// rolled back from; and the current pin, so that saving the form
	// unchanged keeps it.
	rejected, err := d.store.RejectedReleases(ctx, dev.ID)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	var pinnable []string
	for _, rel := range rels {
		if rel.Version == dev.PinnedVersion || rel.Withdrawn.IsZero() && semver.Newer(rel.Version, dev.Version) && !slices.Contains(rejected, rel.ID) {
			pinnable = append(pinnable, rel.Version)
		}
	}
	slices.Reverse(pinnable)
	data := map[string]any{"Title": "Device " + dev.ID, "Device": dev, "Events": evs, "Sessions": sessionsFromEvents(evs),
		"Active": active, "Pinnable": pinnable, "LabelText": labelLines(dev.Labels), "FormError": formError,
		"Pin":   dev.PinnedVersion,
		"State": fleetState(dev, map[string]*fota.Session{dev.ID: active}, d.now(), d.cfg.OnlineWithin)}
	if formError != "" && r.Method == http.MethodPost {
		if typed, ok := r.PostForm["labels"]; ok {
			data["LabelText"] = typed[0]
		}
		if typed, ok := r.PostForm["version"]; ok {
			data["Pin"] = typed[0]
		}
	}
	if ro, m, err := d.store.DeviceRollout(ctx, dev.ID); err == nil {
		data["Rollout"], data["Member"] = ro, m
	} else if fota.ErrorCode(err) != fota.ENOTFOUND {
		d.errorPage(w, r, u, err)
		return
	}
	d.render(w, r, status, "device", u, data)
}

// labelLines writes labels one key=value a line, as the edit form takes
// them.
func labelLines(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + labels[k] + "\n")
	}
	return b.String()
}

// setLabels replaces a device's labels with the form's: what is new or
// changed is set, what is gone removed, in one change.
func (d *Dashboard) setLabels(w http.ResponseWriter, r *http.Request, u *viewer) {
	dev, err := d.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	want, err := fota.ParseLabels(strings.Fields(strings.ReplaceAll(r.PostFormValue("labels"), ",", " ")))
	if err != nil {
		d.renderDevice(w, r, u, http.StatusBadRequest, fota.ErrorMessage(err))
		return
	}
	set := map[string]string{}
	for k, v := range want {
		if old, ok := dev.Labels[k]; !ok || old != v {
			set[k] = v
		}
	}
	var remove []string
	for k := range dev.Labels {
		if _, ok := want[k]; !ok {
			remove = append(remove, k)
		}
	}
	if len(set) == 0 && len(remove) == 0 {
		d.redirectWith(w, r, deviceURL(dev.ID), "Labels unchanged.")
		return
	}
	if _, err := d.updates.SetLabels(u.ctxFor(r), dev.ID, set, remove); err != nil {
		d.renderDevice(w, r, u, d.statusOf(err), fota.ErrorMessage(err))
		return
	}
	d.redirectWith(w, r, deviceURL(dev.ID), "Labels saved.")
}

func (d *Dashboard) pinDevice(w http.ResponseWriter, r *http.Request, u *viewer) {
	id := r.PathValue("id")
	version := r.PostFormValue("version")
	var err error
	if version == "" {
		err = d.updates.Unpin(u.ctxFor(r), id)
	} else {
		err = d.updates.Pin(u.ctxFor(r), id, version)
	}
	if err != nil {
		d.renderDevice(w, r, u, d.statusOf(err), fota.ErrorMessage(err))
		return
	}
	if version == "" {
		d.redirectWith(w, r, deviceURL(id), "Pin removed: rollouts decide again what this device gets.")
		return
	}
	d.redirectWith(w, r, deviceURL(id), "Pinned to "+version+": offered at the device's next check-in.")
}

func deviceURL(id string) string { return "/devices/" + url.PathEscape(id) }
