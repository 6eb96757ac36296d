package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota/internal/update"
)

// maxRetention bounds a retention age: a hundred years is "for ever", and
// the bound keeps the arithmetic far from overflowing time.Duration.
const maxRetention = 100 * 365 * 24 * time.Hour

// parseRetention reads a retention age: Go's durations (36h, 90m) plus
// days (90d) and weeks (2w), which ages of history are counted in; "0"
// keeps for ever.
func parseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var d time.Duration
	if n, unit, ok := cutUnit(s); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 || v > int64(maxRetention/unit) {
			return 0, fmt.Errorf("%q: want a whole number of days or weeks up to 100 years, e.g. 90d", s)
		}
		d = time.Duration(v) * unit
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q: want an age such as 90d, 2w or 36h (0 keeps for ever)", s)
		}
	}
	if d < 0 || d > maxRetention {
		return 0, fmt.Errorf("%q: want an age from 0 to 100 years", s)
	}
	if d > 0 && d < time.Hour {
		// Shorter would prune the history of updates still going on.
		return 0, fmt.Errorf("%q is under an hour; keep history at least that long (0 keeps it for ever)", s)
	}
	return d, nil
}

// cutUnit splits "90d" or "2w" into its number and unit.
func cutUnit(s string) (string, time.Duration, bool) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			return n, unit, true
		}
	}
	return "", 0, false
}

// retentionFlags are fota serve's retention flags.
type retentionFlags struct {
	events, sessions       *string
	maxEvents, maxSessions *int
}

func addRetentionFlags(fs interface {
	String(name, value, usage string) *string
	Int(name string, value int, usage string) *int
}) retentionFlags {
	days := func(d time.Duration) string { return strconv.Itoa(int(d/(24*time.Hour))) + "d" }
	return retentionFlags{
		events:      fs.String("retain-events", days(update.DefaultRetainEvents), "keep events this long, e.g. 90d, 2w, 36h (0: for ever)"),
		maxEvents:   fs.Int("retain-events-max", update.DefaultMaxEvents, "keep at most this many events, the newest (0: no limit)"),
		sessions:    fs.String("retain-sessions", days(update.DefaultRetainSessions), "keep ended update sessions, and removed devices, this long (0: for ever)"),
		maxSessions: fs.Int("retain-sessions-max", update.DefaultMaxSessions, "keep at most this many ended update sessions, the newest (0: no limit)"),
	}
}

// retention is what the flags say, or a usage error.
func (f retentionFlags) retention() (update.Retention, error) {
	var r update.Retention
	var err error
	if r.Events, err = parseRetention(*f.events); err != nil {
		return r, usagef("--retain-events %v", err)
	}
	if r.Sessions, err = parseRetention(*f.sessions); err != nil {
		return r, usagef("--retain-sessions %v", err)
	}
	if *f.maxEvents < 0 || *f.maxSessions < 0 {
		return r, usagef("--retain-events-max and --retain-sessions-max: want 0 (no limit) or more")
	}
	r.MaxEvents, r.MaxSessions = *f.maxEvents, *f.maxSessions
	return r, nil
}
