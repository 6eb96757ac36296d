package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/semver"
)

// Fleet states of a device, as the fleet page counts them.
const (
	stateUpdating = "updating" // an update session is active
	stateOnline   = "online"   // seen within OnlineWithin
	stateOffline  = "offline"  // not seen within it, or never
)

var fleetStates = []string{stateUpdating, stateOnline, stateOffline}

// deviceFilter is the search and label filter of the fleet and device
// pages.
type deviceFilter struct {
	Query    string // a part of the id
	Selector string // labels, as rollouts select
	Hardware string
	Version  string
	State    string
	sel      update.Selector
}

// readFilter reads the filter from the query string; a selector that does
// not parse is an error the page shows.
func readFilter(r *http.Request) (deviceFilter, error) {
	q := r.URL.Query()
	f := deviceFilter{Query: strings.TrimSpace(q.Get("q")), Selector: strings.TrimSpace(q.Get("labels")),
		Hardware: q.Get("hardware"), Version: q.Get("version"), State: q.Get("state")}
	var err error
	f.sel, err = update.ParseSelector(f.Selector)
	if err == nil && f.State != "" && !slices.Contains(fleetStates, f.State) {
		err = fota.Errorf(fota.EINVALID, "state %q: want %s", f.State, strings.Join(fleetStates, ", "))
	}
	return f, err
}

// link is a devices-list address with this filter and one more field set:
// a drill-down keeps what the page was filtered by.
func (f deviceFilter) link(key, value string) string {
	q := url.Values{}
	for k, v := range map[string]string{"q": f.Query, "labels": f.Selector, "hardware": f.Hardware, "version": f.Version, "state": f.State} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set(key, value)
	return "/devices?" + q.Encode()
}

func (f deviceFilter) matches(d *fota.Device, state string) bool {
	return (f.Query == "" || strings.Contains(d.ID, f.Query)) && f.sel.Matches(d.Labels) &&
		(f.Hardware == "" || d.Hardware == f.Hardware) && (f.Version == "" || d.Version == f.Version) &&
		(f.State == "" || f.State == state)
}

// fleetState is where a device stands: updating, else online or offline
// by when it was last seen.
func fleetState(d *fota.Device, active map[string]*fota.Session, now time.Time, within time.Duration) string {
	switch {
	case active[d.ID] != nil:
		return stateUpdating
	case !d.LastSeen.IsZero() && now.Sub(d.LastSeen) <= within:
		return stateOnline
	}
	return stateOffline
}

// versionRow is one bar of the fleet chart: a version's devices by state.
type versionRow struct {
	Version  string
	Link     string // the devices of this version, under the same filter
	Total    int
	Counts   map[string]int
	Segments []segment
}

// segment is one state's part of a version's bar, in percent of the
// longest bar.
type segment struct {
	State string
	Count int
	X, W  float64
}

type countRow struct {
	Name  string
	Link  string
	Count int
}

// fleet is what the fleet page shows.
type fleet struct {
	Total, Online, Offline, Updating int
	Versions                         []*versionRow
	Hardware                         []countRow
	Rollouts                         []*fota.Rollout
}

// summarize counts the devices that pass f, by version and state and by
// hardware, and lays out the chart's bars. Versions come newest first.
func summarize(devices []*fota.Device, active map[string]*fota.Session, f deviceFilter, now time.Time, within time.Duration) *fleet {
	fl := &fleet{}
	byVersion := map[string]*versionRow{}
	byHardware := map[string]int{}
	for _, d := range devices {
		state := fleetState(d, active, now, within)
		if !f.matches(d, state) {
			continue
		}
		fl.Total++
		switch state {
		case stateUpdating:
			fl.Updating++
		case stateOnline:
			fl.Online++
		default:
			fl.Offline++
		}
		v := d.Version
		if v == "" {
			v = "unknown"
		}
		row := byVersion[v]
		if row == nil {
			row = &versionRow{Version: v, Counts: map[string]int{}}
			byVersion[v] = row
		}
		row.Total++
		row.Counts[state]++
		byHardware[d.Hardware]++
	}
	for _, row := range byVersion {
		fl.Versions = append(fl.Versions, row)
	}
	slices.SortFunc(fl.Versions, func(a, b *versionRow) int { return compareVersions(b.Version, a.Version) })
	most := 0
	for _, row := range fl.Versions {
		most = max(most, row.Total)
	}
	for _, row := range fl.Versions {
		row.Link = f.link("version", row.Version)
		x := 0.0
		for _, st := range fleetStates {
			n := row.Counts[st]
			if n == 0 {
				continue
			}
			w := float64(n) * 100 / float64(most)
			row.Segments = append(row.Segments, segment{State: st, Count: n, X: x, W: w})
			x += w
		}
	}
	for h, n := range byHardware {
		fl.Hardware = append(fl.Hardware, countRow{h, f.link("hardware", h), n})
	}
	slices.SortFunc(fl.Hardware, func(a, b countRow) int { return strings.Compare(a.Name, b.Name) })
	return fl
}

// compareVersions orders by SemVer precedence; text that is not a version
// sorts below every version, by its text.
func compareVersions(a, b string) int {
	va, errA := semver.Parse(a)
	vb, errB := semver.Parse(b)
	switch {
	case errA == nil && errB == nil:
		if c := semver.Compare(va, vb); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case errA == nil:
		return 1
	case errB == nil:
		return -1
	}
	return strings.Compare(a, b)
}

// fleetDevices reads the registered devices and indexes the active
// sessions by device; with a filter that did not parse (filterErr) it
// reads nothing: such a filter matches nothing, rather than seeming to
// match all.
func (d *Dashboard) fleetDevices(r *http.Request, filterErr error) ([]*fota.Device, map[string]*fota.Session, error) {
	if filterErr != nil {
		return nil, nil, nil
	}
	devices, err := d.store.Devices(r.Context())
	if err != nil {
		return nil, nil, err
	}
	sessions, err := d.store.ActiveSessions(r.Context())
	if err != nil {
		return nil, nil, err
	}
	active := make(map[string]*fota.Session, len(sessions))
	for _, s := range sessions {
		active[s.DeviceID] = s
	}
	return devices, active, nil
}

func (d *Dashboard) fleetPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	f, ferr := readFilter(r)
	devices, active, err := d.fleetDevices(r, ferr)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	fl := summarize(devices, active, f, d.now(), d.cfg.OnlineWithin)
	rollouts, err := d.updates.Rollouts(r.Context())
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	for _, ro := range rollouts {
		if fota.RolloutHolds(ro.State) {
			fl.Rollouts = append(fl.Rollouts, ro)
		}
	}
	data := map[string]any{"Title": "Fleet", "Fleet": fl, "Filter": f, "States": fleetStates, "OnlineWithin": d.cfg.OnlineWithin}
	status := http.StatusOK
	if ferr != nil {
		data["FilterError"] = fota.ErrorMessage(ferr)
		status = http.StatusBadRequest
	}
	d.render(w, r, status, "fleet", u, data)
}
