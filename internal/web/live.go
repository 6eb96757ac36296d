package web

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota"
)

// Live updates. One poller per server reads the event log (so it sees
// what every replica recorded) and, when something new concerns a topic
// that has watchers, renders that topic once and hands the same bytes to
// every watcher: two hundred dashboards on one rollout cost one render.
// Watchers are Server-Sent Event streams; a slow one only ever holds the
// newest render of its topic (rows of the events page queue, boundedly).

const (
	// lookback re-reads the newest events on every poll: PostgreSQL may
	// commit an event numbered below one already seen, and a set of seen
	// ids keeps each from being sent twice.
	lookback = 64
	// refreshEvery re-renders watched rollouts even without events: a
	// member turns silent with time alone.
	refreshEvery = 10 * time.Second
	// heartbeatEvery keeps proxies from closing a quiet stream and
	// re-checks the watcher's session, so a revoked one stops watching.
	heartbeatEvery = 25 * time.Second
	// sessionRecheck bounds how long a stream goes on sending after its
	// session was revoked.
	sessionRecheck = 3 * time.Second
	// rowBacklog bounds the event rows waiting for a slow watcher.
	rowBacklog = 64
)

type watcher struct {
	rollout int64             // a rollout page's rollout, or 0
	operate bool              // its user may pause, resume and abort
	filter  *fota.EventFilter // the events page's filter, or nil
	// since is the newest event the events page has: older rows are not
	// sent again (the poller may pass over events it saw before the page
	// listened).
	since int64
	send  chan []byte
}

type hub struct {
	d    *Dashboard
	poll time.Duration

	mu       sync.Mutex
	watchers map[*watcher]struct{}
	high     int64 // the newest event id the poller has seen
	frames   map[frameKey]*cachedFrame

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newHub(d *Dashboard, poll time.Duration) *hub {
	h := &hub{d: d, poll: poll, watchers: map[*watcher]struct{}{}, frames: map[frameKey]*cachedFrame{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go h.run()
	return h
}

func (h *hub) close() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

// add registers w; an events watcher that has no newer event than the
// poller's newest starts from there.
func (h *hub) add(w *watcher) {
	h.mu.Lock()
	w.since = max(w.since, h.high)
	h.watchers[w] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
}

func (h *hub) snapshot() []*watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := make([]*watcher, 0, len(h.watchers))
	for w := range h.watchers {
		ws = append(ws, w)
	}
	return ws
}

func (h *hub) run() {
	defer close(h.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-h.stop
		cancel()
	}()
	var high int64 // the highest event id seen
	seen := map[int64]bool{}
	lastRefresh := time.Now()
	tick := time.NewTicker(h.poll)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		ws := h.snapshot()
		if len(ws) == 0 && high > 0 {
			continue
		}
		evs, err := h.d.store.Events(ctx, fota.EventFilter{AfterID: max(high-lookback, 0), Limit: 1000})
		if err != nil {
			if ctx.Err() == nil {
				h.d.log.Warn("dashboard live updates: read events", "error", err)
			}
			continue
		}
		var fresh []*fota.Event // oldest first
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			if high > 0 { // the first poll only learns where the log is
				fresh = append(fresh, e)
			}
			high = max(high, e.ID)
		}
		if high == 0 {
			high = -1 // an empty log: from now on every event is new
		}
		h.mu.Lock()
		h.high = high
		h.mu.Unlock()
		for id := range seen {
			if id < high-2*lookback {
				delete(seen, id)
			}
		}
		refresh := time.Since(lastRefresh) >= refreshEvery
		if refresh {
			lastRefresh = time.Now()
		}
		h.deliver(ctx, ws, fresh, refresh)
	}
}

// deliver renders what changed for the watchers: each watched rollout
// once, if an event concerns it or refresh is due; each events page's new
// rows.
func (h *hub) deliver(ctx context.Context, ws []*watcher, fresh []*fota.Event, refresh bool) {
	start := time.Now() // a render from this round serves every watcher of its rollout
	touched := map[int64]bool{}
	for _, e := range fresh {
		if e.RolloutID != 0 {
			touched[e.RolloutID] = true
		}
	}
	for _, w := range ws {
		switch {
		case w.rollout != 0:
			if !refresh && !touched[w.rollout] {
				continue
			}
			frame, err := h.rolloutFrame(ctx, frameKey{w.rollout, w.operate}, start)
			if err != nil {
				h.d.log.Warn("dashboard live updates: render rollout", "rollout_id", w.rollout, "error", err)
			}
			if frame != nil {
				replace(w.send, frame)
			}
		case w.filter != nil:
			var rows []*fota.Event
			for _, e := range fresh {
				if e.ID > w.since && eventMatches(e, w.filter) {
					rows = append(rows, e)
				}
			}
			if len(rows) == 0 {
				continue
			}
			frame, err := h.d.rowsFrame(rows)
			if err != nil {
				h.d.log.Warn("dashboard live updates: render events", "error", err)
				continue
			}
			select {
			case w.send <- frame:
			default: // a watcher this far behind reloads when it catches up
			}
		}
	}
}

// frameKey names one render of a rollout's live section: operators'
// has the buttons.
type frameKey struct {
	rollout int64
	operate bool
}

// cachedFrame is a topic's newest render and the newest event the poller
// had seen when it was made.
type cachedFrame struct {
	mu    sync.Mutex
	frame []byte
	high  int64
	at    time.Time
}

// maxFrames bounds the renders kept; past it the cache starts afresh.
const maxFrames = 1024

// rolloutFrame returns the rollout's live section as a frame, rendering it
// only if no render is current: one made since the poller last saw a new
// event and not before notBefore. Watchers that arrive
// together wait for one render rather than each making their own, so two
// hundred dashboards opening at once cost one.
func (h *hub) rolloutFrame(ctx context.Context, key frameKey, notBefore time.Time) ([]byte, error) {
	h.mu.Lock()
	c := h.frames[key]
	if c == nil {
		if len(h.frames) >= maxFrames {
			clear(h.frames)
		}
		c = &cachedFrame{}
		h.frames[key] = c
	}
	high := h.high
	h.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frame != nil && c.high == high && !c.at.Before(notBefore) {
		return c.frame, nil
	}
	at := time.Now()
	frame, err := h.d.rolloutFrame(ctx, key.rollout, key.operate)
	if err != nil {
		return nil, err
	}
	c.frame, c.high, c.at = frame, high, at
	return frame, nil
}

// replace puts frame in ch, dropping a frame not yet sent: a rollout's
// newest render says all an older one did.
func replace(ch chan []byte, frame []byte) {
	for {
		select {
		case ch <- frame:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

func eventMatches(e *fota.Event, f *fota.EventFilter) bool {
	return (f.DeviceID == "" || e.DeviceID == f.DeviceID) && (f.Kind == "" || e.Kind == f.Kind) &&
		(f.RolloutID == 0 || e.RolloutID == f.RolloutID) && (f.Actor == "" || e.Actor == f.Actor)
}

// sseFrame writes one Server-Sent Event; each line of data is its own
// data field.
func sseFrame(event string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: " + event + "\n")
	for line := range strings.Lines(string(data)) {
		b.WriteString("data: " + strings.TrimRight(line, "\r\n") + "\n")
	}
	b.WriteString("\n")
	return b.Bytes()
}

func (d *Dashboard) rolloutFrame(ctx context.Context, id int64, operate bool) ([]byte, error) {
	v, err := d.rolloutView(ctx, id)
	if err != nil {
		return nil, err
	}
	html, err := d.fragment("rollout-live", liveRollout{V: v, Operate: operate})
	if err != nil {
		return nil, err
	}
	return sseFrame("update", html), nil
}

func (d *Dashboard) rowsFrame(evs []*fota.Event) ([]byte, error) {
	var b bytes.Buffer
	for i := len(evs) - 1; i >= 0; i-- { // newest on top, as the page lists them
		row, err := d.fragment("event-row", evs[i])
		if err != nil {
			return nil, err
		}
		b.Write(row)
	}
	return sseFrame("rows", b.Bytes()), nil
}

// stream serves one watcher until the browser goes, the server stops or
// the session ends. first is sent at once, so the page is current from
// the moment it listens.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request, wt *watcher, first []byte) {
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(append([]byte("retry: 3000\n\n"), first...)) {
		return
	}
	d.live.add(wt)
	defer d.live.remove(wt)
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	checked := time.Now()
	// signedIn re-reads the session, at most every sessionRecheck before a
	// frame: a revoked or expired one stops the stream before it is sent
	// anything more.
	signedIn := func(force bool) bool {
		if !force && time.Since(checked) < sessionRecheck {
			return true
		}
		checked = time.Now()
		if _, err := d.session(r); err != nil {
			write(sseFrame("signedout", []byte(fota.ErrorMessage(err))))
			return false
		}
		return true
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.live.stop:
			return
		case frame := <-wt.send:
			if !signedIn(false) || !write(frame) {
				return
			}
		case <-beat.C:
			if !signedIn(true) || !write([]byte(": ping\n\n")) {
				return
			}
		}
	}
}

func (d *Dashboard) rolloutLive(w http.ResponseWriter, r *http.Request, u *viewer) {
	id, err := parseRolloutID(r)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	operate := u.Can(fota.RoleOperator)
	first, err := d.live.rolloutFrame(r.Context(), frameKey{id, operate}, time.Now().Add(-d.cfg.LivePoll))
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	d.stream(w, r, &watcher{rollout: id, operate: operate, send: make(chan []byte, 1)}, first)
}

func (d *Dashboard) eventsLive(w http.ResponseWriter, r *http.Request, u *viewer) {
	f, err := readEventFilter(r)
	if err != nil {
		d.errorPage(w, r, u, err)
		return
	}
	// The rows recorded since the page was drawn (after=its newest id),
	// so nothing falls between the page and the stream; the page skips
	// rows it has.
	first := []byte(": watching events\n\n")
	wt := &watcher{filter: &f, send: make(chan []byte, rowBacklog)}
	if after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64); err == nil && after > 0 {
		wt.since = after
		since := f
		since.AfterID, since.Limit = after, rowBacklog
		evs, err := d.store.Events(r.Context(), since)
		if err != nil {
			d.errorPage(w, r, u, err)
			return
		}
		if len(evs) > 0 {
			wt.since = evs[0].ID
			slices.Reverse(evs) // rowsFrame takes them oldest first
			if first, err = d.rowsFrame(evs); err != nil {
				d.errorPage(w, r, u, err)
				return
			}
		}
	}
	d.stream(w, r, wt, first)
}
