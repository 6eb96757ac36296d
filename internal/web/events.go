package web

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ecowatt/fota"
)

// eventKinds are the kinds the events page filters on.
var eventKinds = []string{
	fota.EventPublished, fota.EventWithdrawn, fota.EventDeleted,
	fota.EventDeviceAdded, fota.EventDeviceRemoved, fota.EventLabels, fota.EventAssigned, fota.EventAPIPolicy, fota.EventBackoffClear,
	fota.EventSessionOpened, fota.EventProgress, fota.EventDownloaded, fota.EventVerified, fota.EventApplied,
	fota.EventConfirmed, fota.EventRolledBack, fota.EventFailed, fota.EventRefused, fota.EventNotApplied, fota.EventAbandoned,
	fota.EventRolloutCreated, fota.EventRolloutWaveOpened, fota.EventRolloutPaused, fota.EventRolloutResumed,
	fota.EventRolloutHalted, fota.EventRolloutAborted, fota.EventRolloutCompleted, fota.EventRolloutSuperseded,
	fota.EventTokenCreated, fota.EventTokenRevoked,
	fota.EventUserAdded, fota.EventUserRemoved, fota.EventUserPassword, fota.EventUserSignedIn, fota.EventSessionsRevoked,
}

// eventsPerPage is how many events a page lists.
const eventsPerPage = 100

// readEventFilter reads the events page's filter: kind, device, rollout,
// actor, and before (an event id, for older pages).
func readEventFilter(r *http.Request) (fota.EventFilter, error) {
	q := r.URL.Query()
	f := fota.EventFilter{Kind: q.Get("kind"), DeviceID: strings.TrimSpace(q.Get("device")), Actor: strings.TrimSpace(q.Get("actor")),
		Limit: eventsPerPage}
	if f.Actor != "" && f.Actor != "local" && !strings.Contains(f.Actor, ":") {
		f.Actor = "user:" + f.Actor // a bare name is a dashboard user's; token:NAME names a token
	}
	if v := q.Get("rollout"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			return f, fota.Errorf(fota.EINVALID, "rollout %q: want a rollout number", v)
		}
		f.RolloutID = id
	}
	if v := q.Get("before"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			return f, fota.Errorf(fota.EINVALID, "before %q: want an event number", v)
		}
		f.BeforeID = id
	}
	return f, nil
}

func (d *Dashboard) eventsPage(w http.ResponseWriter, r *http.Request, u *viewer) {
	f, err := readEventFilter(r)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	evs, err := d.store.Events(r.Context(), f)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	q := r.URL.Query()
	q.Del("before")
	q.Del("after")
	data := map[string]any{"Title": "Events", "Events": evs, "Filter": f, "Kinds": eventKinds, "Rollout": q.Get("rollout")}
	if f.BeforeID == 0 {
		// Only the newest page follows the log live.
		var newest int64
		if len(evs) > 0 {
			newest = evs[0].ID
		}
		live := q
		live.Set("after", strconv.FormatInt(newest, 10))
		data["Live"] = "/events/live?" + live.Encode()
	}
	if len(evs) == eventsPerPage {
		older := r.URL.Query()
		older.Set("before", strconv.FormatInt(evs[len(evs)-1].ID, 10))
		data["Older"] = "/events?" + older.Encode()
	}
	d.render(w, r, http.StatusOK, "events", u, data)
}
