package update

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zones must load on hosts and images without zoneinfo

	"github.com/ecowatt/fota"
)

// windowHelp ends every maintenance-window error: operators read it.
const windowHelp = "write [days] HH:MM-HH:MM [zone] (e.g. Mon-Fri 01:00-05:00 Europe/Berlin, Sat,Sun 22:00-02:00 UTC or 02:00-04:00)"

// minutesPerDay is the length of a day on the wall clock, and the latest
// a window may end: 24:00.
const minutesPerDay = 24 * 60

// dayNames are the day names windows use, indexed by time.Weekday.
var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// Window is a maintenance window: a time of day, on some days of the week,
// by the wall clock of a zone. It starts on each of its days at start and
// ends the same day, or the next day if end is not after start (it
// crosses midnight).
//
// Times are read on the zone's wall clock, so the clocks changing moves
// real time, not the window: 01:00-05:00 lasts three hours on the night
// the clocks go forward and five on the night they go back. A start or
// end is the moment the wall clock first reaches it: a time the clocks
// skip is reached as they skip past it (so 02:00-02:30 on a night the
// clocks jump from 02:00 to 03:00 has no length and does not occur), and
// a time they repeat at its first occurrence.
//
// The zero Window never opens.
type Window struct {
	days       [7]bool // indexed by time.Weekday: the days it starts on
	start, end int     // minutes since midnight; end may be minutesPerDay
	loc        *time.Location
}

// Spaces around "-" and "," in days and times are the operator's
// formatting, not separators: "Mon - Fri", "Sat, Sun", "01:00 - 05:00".
var windowJoins = regexp.MustCompile(`\s*([-,])\s*`)

// ParseWindow parses "[DAYS ]HH:MM-HH:MM[ ZONE]", such as
// "Mon-Fri 01:00-05:00 Europe/Berlin" or "Sat,Sun 22:00-02:00 UTC". DAYS
// are Mon to Sun (any case), ranges such as Mon-Fri or Fri-Mon (wrapping
// over the week end), and lists of those; "daily", "*" or nothing means
// every day. Times are 00:00 to 24:00 (24:00 only as the end); an end not
// after the start crosses midnight. ZONE is an IANA zone name; none means
// UTC. Errors are EINVALID.
func ParseWindow(s string) (Window, error) {
	fail := func(format string, args ...any) (Window, error) {
		return Window{}, fota.Errorf(fota.EINVALID, "maintenance window %q: %s", s, fmt.Sprintf(format, args...))
	}
	fields := strings.Fields(windowJoins.ReplaceAllString(s, "$1"))
	// Days and zone names have no colon; the times always do.
	timeField := -1
	for i, f := range fields {
		if strings.Contains(f, ":") {
			timeField = i
			break
		}
	}
	if timeField < 0 || timeField > 1 || len(fields)-timeField > 2 {
		return fail("%s", windowHelp)
	}

	w := Window{loc: time.UTC}
	if timeField == 0 {
		w.days = everyDay()
	} else {
		days, err := parseDays(fields[0])
		if err != nil {
			return fail("%s", fota.ErrorMessage(err))
		}
		w.days = days
	}

	startText, endText, ok := strings.Cut(fields[timeField], "-")
	if !ok {
		return fail("%q is not a time range; %s", fields[timeField], windowHelp)
	}
	var err error
	if w.start, err = parseClock(startText); err != nil {
		return fail("%s", fota.ErrorMessage(err))
	}
	if w.end, err = parseClock(endText); err != nil {
		return fail("%s", fota.ErrorMessage(err))
	}
	switch {
	case w.start == minutesPerDay:
		return fail("a window can end at 24:00 but not start there; start at 00:00")
	case w.start == w.end:
		return fail("it starts and ends at %s, so it has no length (an end before the start crosses midnight, as in 22:00-02:00)", formatClock(w.start))
	}

	if timeField+1 < len(fields) {
		zone := fields[timeField+1]
		switch {
		case strings.EqualFold(zone, "UTC"):
			// time.UTC already
		case zone == "Local":
			// The server's own zone is an accident of where it runs.
			return fail("name the zone (e.g. Europe/Berlin or UTC) rather than Local")
		default:
			loc, err := time.LoadLocation(zone)
			if err != nil {
				if _, dayErr := parseDays(zone); dayErr == nil {
					return fail("days go before the time; %s", windowHelp)
				}
				return fail("unknown time zone %q; use an IANA name such as Europe/Berlin or America/New_York, or UTC", zone)
			}
			w.loc = loc
		}
	}
	return w, nil
}

func everyDay() [7]bool { return [7]bool{true, true, true, true, true, true, true} }

// parseDays parses a day list: names, ranges and "daily" or "*".
func parseDays(s string) ([7]bool, error) {
	if strings.EqualFold(s, "daily") || s == "*" {
		return everyDay(), nil
	}
	var days [7]bool
	for item := range strings.SplitSeq(s, ",") {
		from, to, isRange := strings.Cut(item, "-")
		first, err := parseDay(from)
		if err != nil {
			return days, err
		}
		last := first
		if isRange {
			if last, err = parseDay(to); err != nil {
				return days, err
			}
		}
		for d := first; ; d = (d + 1) % 7 {
			days[d] = true
			if d == last {
				break
			}
		}
	}
	return days, nil
}

func parseDay(s string) (time.Weekday, error) {
	for d, name := range dayNames {
		if strings.EqualFold(s, name) {
			return time.Weekday(d), nil
		}
	}
	return 0, fota.Errorf(fota.EINVALID, "day %q: use Mon Tue Wed Thu Fri Sat Sun, ranges such as Mon-Fri or Fri-Mon, lists of those, or daily", s)
}

// parseClock parses HH:MM, 00:00 to 24:00, into minutes since midnight.
func parseClock(s string) (int, error) {
	bad := fota.Errorf(fota.EINVALID, "time %q: write HH:MM from 00:00 to 24:00", s)
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) < 1 || len(hh) > 2 || len(mm) != 2 ||
		strings.Trim(hh, "0123456789") != "" || strings.Trim(mm, "0123456789") != "" {
		return 0, bad
	}
	h, _ := strconv.Atoi(hh)
	m, _ := strconv.Atoi(mm)
	if m > 59 || h*60+m > minutesPerDay {
		return 0, bad
	}
	return h*60 + m, nil
}

func formatClock(minutes int) string { return fmt.Sprintf("%02d:%02d", minutes/60, minutes%60) }

// String is the canonical form, which ParseWindow reads back unchanged:
// days as Mon-first runs (omitted for every day), the times, and the zone.
func (w Window) String() string {
	var b strings.Builder
	if days := formatDays(w.days); days != "" {
		b.WriteString(days + " ")
	}
	fmt.Fprintf(&b, "%s-%s %s", formatClock(w.start), formatClock(w.end), w.location())
	return b.String()
}

// formatDays writes runs of days, starting from Monday or, if a run goes
// over Monday (Fri-Mon), from the first run after it: "Mon-Fri", "Sat,Sun",
// "Wed,Fri-Mon". Every day is "".
func formatDays(days [7]bool) string {
	if days == everyDay() {
		return ""
	}
	selected := func(i int) bool { return days[(i+7)%7] }
	// i counts from Monday (time.Weekday 1).
	first := -1
	for i := 1; i < 8; i++ {
		if selected(i) && !selected(i-1) {
			first = i
			break
		}
	}
	if first < 0 {
		return ""
	}
	var runs []string
	for i := first; i < first+7; {
		if !selected(i) {
			i++
			continue
		}
		j := i
		for j+1 < first+7 && selected(j+1) {
			j++
		}
		switch j - i {
		case 0:
			runs = append(runs, dayNames[i%7])
		case 1:
			runs = append(runs, dayNames[i%7], dayNames[j%7])
		default:
			runs = append(runs, dayNames[i%7]+"-"+dayNames[j%7])
		}
		i = j + 1
	}
	return strings.Join(runs, ",")
}

func (w Window) location() *time.Location {
	if w.loc == nil {
		return time.UTC
	}
	return w.loc
}

// Contains reports whether t falls in an occurrence of the window.
func (w Window) Contains(t time.Time) bool {
	start, end := w.Next(t)
	return !start.IsZero() && !t.Before(start) && t.Before(end)
}

// Next returns the occurrence of the window that contains t (start <= t <
// end) or, if none does, the first one after t, as instants in the
// window's zone. Occurrences the clocks erase (see Window) are skipped.
// The zero Window has none: Next returns zero times.
func (w Window) Next(t time.Time) (start, end time.Time) {
	loc := w.location()
	local := t.In(loc)
	y, m, d := local.Date()
	// An occurrence spans at most a day of wall clock, so the one that
	// contains t started today or yesterday. Scanning on for five weeks
	// finds the next even if the clocks erase one on each of its days
	// across two changes.
	for i := -1; i < 35; i++ {
		day := time.Date(y, m, d+i, 12, 0, 0, 0, time.UTC) // the date only
		if !w.days[day.Weekday()] {
			continue
		}
		endDay := day
		if w.end <= w.start {
			endDay = day.AddDate(0, 0, 1)
		}
		start := wallInstant(day, w.start, loc)
		end := wallInstant(endDay, w.end, loc)
		if start.Before(end) && t.Before(end) {
			return start, end
		}
	}
	return time.Time{}, time.Time{}
}

// wallInstant returns the moment the wall clock in loc first reaches the
// date of day at minute (which may be minutesPerDay, the next midnight):
// if the clocks skip that reading, the moment they skip past it.
func wallInstant(day time.Time, minute int, loc *time.Location) time.Time {
	y, m, d := day.Date()
	wall := time.Date(y, m, d, 0, minute, 0, 0, time.UTC) // the reading, as if in UTC
	// Zone offsets are within 14 hours of UTC, so every instant that can
	// show this reading lies within 15 hours of wall: walk the zone's
	// periods over that span, in order.
	at, limit := wall.Add(-15*time.Hour), wall.Add(15*time.Hour)
	for {
		local := at.In(loc)
		_, offset := local.Zone()
		periodStart, periodEnd := local.ZoneBounds()
		candidate := wall.Add(-time.Duration(offset) * time.Second)
		if (periodStart.IsZero() || !candidate.Before(periodStart)) && (periodEnd.IsZero() || candidate.Before(periodEnd)) {
			return candidate.In(loc)
		}
		if periodEnd.IsZero() || periodEnd.After(limit) {
			break
		}
		// The clocks jump over the reading at periodEnd (spring forward):
		// before it they show less, from it on more.
		_, nextOffset := periodEnd.In(loc).Zone()
		before := periodEnd.Add(time.Duration(offset) * time.Second)
		after := periodEnd.Add(time.Duration(nextOffset) * time.Second)
		if !wall.Before(before) && wall.Before(after) {
			return periodEnd.In(loc)
		}
		at = periodEnd
	}
	// No reading and no jump over it within 15 hours: only a zone table
	// that breaks the 14-hour bound could get here, and time.Date's
	// answer is as good as any.
	return time.Date(y, m, d, 0, minute, 0, 0, loc)
}

// NextWindow returns the earliest occurrence of any of ws that contains t
// or, if none does, starts after it; of several that contain t, the one
// that ends last. Overlapping occurrences are not merged. With no windows
// it returns zero times: no window means any time.
func NextWindow(ws []Window, t time.Time) (start, end time.Time) {
	inside := false
	for _, w := range ws {
		s, e := w.Next(t)
		if s.IsZero() {
			continue
		}
		contains := !t.Before(s)
		switch {
		case start.IsZero(),
			contains && !inside,
			contains && inside && e.After(end),
			!contains && !inside && (s.Before(start) || s.Equal(start) && e.After(end)):
			start, end, inside = s, e, contains
		}
	}
	return start, end
}
