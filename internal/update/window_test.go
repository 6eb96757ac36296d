package update_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

func TestParseWindow(t *testing.T) {
	for _, tt := range []struct {
		in        string
		canonical string // for a valid window
		err       string // part of the message, for an invalid one
	}{
		{in: "Mon-Fri 01:00-05:00 Europe/Berlin", canonical: "Mon-Fri 01:00-05:00 Europe/Berlin"},
		{in: "sat, sun 22:00 - 02:00 utc", canonical: "Sat,Sun 22:00-02:00 UTC"},
		{in: "02:00-04:00", canonical: "02:00-04:00 UTC"},
		{in: "daily 00:00-24:00 America/New_York", canonical: "00:00-24:00 America/New_York"},
		{in: "* 1:30-2:00", canonical: "01:30-02:00 UTC"},
		{in: "Mon,Tue,Wed,Thu,Fri,Sat,Sun 03:00-04:00", canonical: "03:00-04:00 UTC"},
		{in: "Sun-Sat 03:00-04:00", canonical: "03:00-04:00 UTC"},
		{in: "Fri-Mon,Wed 02:00-02:30 Europe/Berlin", canonical: "Wed,Fri-Mon 02:00-02:30 Europe/Berlin"},
		{in: "Tue-Thu,Sat 03:00-04:00", canonical: "Tue-Thu,Sat 03:00-04:00 UTC"},
		{in: "Mon,Wed,Fri 03:00-04:00", canonical: "Mon,Wed,Fri 03:00-04:00 UTC"},
		{in: "Sun,Mon 03:00-04:00", canonical: "Sun,Mon 03:00-04:00 UTC"},
		{in: "Mon-Mon 03:00-04:00", canonical: "Mon 03:00-04:00 UTC"},
		{in: "23:00-00:00 Asia/Kolkata", canonical: "23:00-00:00 Asia/Kolkata"},

		{in: "", err: `maintenance window "": write [days] HH:MM-HH:MM [zone] (e.g. Mon-Fri 01:00-05:00 Europe/Berlin, Sat,Sun 22:00-02:00 UTC or 02:00-04:00)`},
		{in: "Mon-Fri", err: `maintenance window "Mon-Fri": write [days] HH:MM-HH:MM [zone]`},
		{in: "Mon 01:00-05:00 UTC extra", err: `write [days] HH:MM-HH:MM [zone]`},
		{in: "01:00", err: `maintenance window "01:00": "01:00" is not a time range`},
		{in: "25:00-26:00", err: `maintenance window "25:00-26:00": time "25:00": write HH:MM from 00:00 to 24:00`},
		{in: "01:60-02:00", err: `time "01:60"`},
		{in: "01:00-24:01", err: `time "24:01"`},
		{in: "1:5-2:00", err: `time "1:5"`},
		{in: "01:00-05:00-06:00", err: `time "05:00-06:00"`},
		{in: "24:00-02:00", err: `a window can end at 24:00 but not start there; start at 00:00`},
		{in: "01:00-01:00", err: `maintenance window "01:00-01:00": it starts and ends at 01:00, so it has no length (an end before the start crosses midnight, as in 22:00-02:00)`},
		{in: "Mon-Fry 01:00-05:00", err: `maintenance window "Mon-Fry 01:00-05:00": day "Fry": use Mon Tue Wed Thu Fri Sat Sun, ranges such as Mon-Fri or Fri-Mon, lists of those, or daily`},
		{in: "Monday 01:00-05:00", err: `day "Monday"`},
		{in: "Mon,,Tue 01:00-05:00", err: `day ""`},
		{in: "01:00-05:00 Europe/Berln", err: `maintenance window "01:00-05:00 Europe/Berln": unknown time zone "Europe/Berln"; use an IANA name such as Europe/Berlin or America/New_York, or UTC`},
		{in: "01:00-05:00 ../../etc/passwd", err: `unknown time zone "../../etc/passwd"`},
		{in: "01:00-05:00 Mon-Fri", err: `days go before the time`},
		{in: "01:00-05:00 Local", err: `name the zone (e.g. Europe/Berlin or UTC) rather than Local`},
	} {
		w, err := update.ParseWindow(tt.in)
		if tt.err != "" {
			if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), tt.err) {
				t.Errorf("ParseWindow(%q) = %v, want EINVALID containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseWindow(%q): %v", tt.in, err)
		} else if got := w.String(); got != tt.canonical {
			t.Errorf("ParseWindow(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func mustWindow(t *testing.T, s string) update.Window {
	t.Helper()
	w, err := update.ParseWindow(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// Times in the table are written with the zone's offset where it matters:
// Next returns instants in the window's zone, compared here as RFC 3339.
// Europe/Berlin moves from +01:00 to +02:00 at 02:00 on 2026-03-29 and
// back at 03:00 on 2026-10-25; America/New_York from -05:00 to -04:00 at
// 02:00 on 2026-03-08 and back at 02:00 on 2026-11-01. 2026-05-04 is a
// Monday.
func TestWindowNext(t *testing.T) {
	for _, tt := range []struct {
		name       string
		window     string
		at         string
		start, end string
		contains   bool
	}{
		// Spring forward: three real hours.
		{"spring forward, inside", "01:00-05:00 Europe/Berlin", "2026-03-29T01:30:00+01:00",
			"2026-03-29T01:00:00+01:00", "2026-03-29T05:00:00+02:00", true},
		{"spring forward, after the jump", "01:00-05:00 Europe/Berlin", "2026-03-29T03:00:00+02:00",
			"2026-03-29T01:00:00+01:00", "2026-03-29T05:00:00+02:00", true},
		{"spring forward, before", "01:00-05:00 Europe/Berlin", "2026-03-28T23:00:00+01:00",
			"2026-03-29T01:00:00+01:00", "2026-03-29T05:00:00+02:00", false},
		// A window inside the skipped hour does not occur that night.
		{"skipped hour, that night", "02:00-02:30 Europe/Berlin", "2026-03-29T00:00:00+01:00",
			"2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00", false},
		{"skipped hour, just after the jump", "02:00-02:30 Europe/Berlin", "2026-03-29T03:00:00+02:00",
			"2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00", false},
		{"skipped hour, the week after", "Sun 02:00-02:30 Europe/Berlin", "2026-03-28T12:00:00Z",
			"2026-04-05T02:00:00+02:00", "2026-04-05T02:30:00+02:00", false},
		// A start the clocks skip is reached as they skip it.
		{"start in the skipped hour", "02:30-04:00 Europe/Berlin", "2026-03-29T01:59:59+01:00",
			"2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00", false},
		{"end in the skipped hour", "01:00-02:30 Europe/Berlin", "2026-03-29T01:59:59+01:00",
			"2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", true},
		// Fall back: five real hours, through the repeated hour.
		{"fall back, first 02:30", "01:00-05:00 Europe/Berlin", "2026-10-25T02:30:00+02:00",
			"2026-10-25T01:00:00+02:00", "2026-10-25T05:00:00+01:00", true},
		{"fall back, second 02:30", "01:00-05:00 Europe/Berlin", "2026-10-25T02:30:00+01:00",
			"2026-10-25T01:00:00+02:00", "2026-10-25T05:00:00+01:00", true},
		// A time the clocks repeat counts at its first occurrence.
		{"repeated hour, first pass", "02:30-02:45 Europe/Berlin", "2026-10-25T02:35:00+02:00",
			"2026-10-25T02:30:00+02:00", "2026-10-25T02:45:00+02:00", true},
		{"repeated hour, second pass", "02:30-02:45 Europe/Berlin", "2026-10-25T02:35:00+01:00",
			"2026-10-26T02:30:00+01:00", "2026-10-26T02:45:00+01:00", false},
		{"crossing midnight into the repeated hour", "22:00-02:30 Europe/Berlin", "2026-10-25T02:00:00+01:00",
			"2026-10-25T22:00:00+01:00", "2026-10-26T02:30:00+01:00", false},
		{"New York spring forward", "01:00-05:00 America/New_York", "2026-03-08T01:30:00-05:00",
			"2026-03-08T01:00:00-05:00", "2026-03-08T05:00:00-04:00", true},
		{"New York fall back, start repeated", "01:30-03:00 America/New_York", "2026-11-01T01:15:00-05:00",
			"2026-11-01T01:30:00-04:00", "2026-11-01T03:00:00-05:00", true},
		{"New York fall back, crossing midnight", "Sat 23:00-01:30 America/New_York", "2026-11-01T01:45:00-04:00",
			"2026-11-07T23:00:00-05:00", "2026-11-08T01:30:00-05:00", false},

		// Days, midnight and 24:00.
		{"Sunday's night, Monday morning", "Sat,Sun 22:00-02:00 UTC", "2026-05-04T01:00:00Z",
			"2026-05-03T22:00:00Z", "2026-05-04T02:00:00Z", true},
		{"after the weekend", "Sat,Sun 22:00-02:00 UTC", "2026-05-04T03:00:00Z",
			"2026-05-09T22:00:00Z", "2026-05-10T02:00:00Z", false},
		{"Friday is not listed", "Sat,Sun 22:00-02:00 UTC", "2026-05-08T23:00:00Z",
			"2026-05-09T22:00:00Z", "2026-05-10T02:00:00Z", false},
		{"Fri-Mon includes Monday", "Fri-Mon 01:00-03:00 UTC", "2026-05-04T02:00:00Z",
			"2026-05-04T01:00:00Z", "2026-05-04T03:00:00Z", true},
		{"Fri-Mon skips Tuesday", "Fri-Mon 01:00-03:00 UTC", "2026-05-05T02:00:00Z",
			"2026-05-08T01:00:00Z", "2026-05-08T03:00:00Z", false},
		{"Monday's night runs into Tuesday", "Fri-Mon 23:00-01:00 UTC", "2026-05-05T00:30:00Z",
			"2026-05-04T23:00:00Z", "2026-05-05T01:00:00Z", true},
		{"ends at 24:00", "Mon-Fri 22:00-24:00 UTC", "2026-05-04T23:59:59Z",
			"2026-05-04T22:00:00Z", "2026-05-05T00:00:00Z", true},
		{"24:00 is not in it", "Mon-Fri 22:00-24:00 UTC", "2026-05-05T00:00:00Z",
			"2026-05-05T22:00:00Z", "2026-05-06T00:00:00Z", false},
		{"the start is in it", "02:00-04:00", "2026-05-04T02:00:00Z",
			"2026-05-04T02:00:00Z", "2026-05-04T04:00:00Z", true},
		{"the end is not", "02:00-04:00", "2026-05-04T04:00:00Z",
			"2026-05-05T02:00:00Z", "2026-05-05T04:00:00Z", false},
		{"all day, at midnight", "00:00-24:00 Europe/Berlin", "2026-05-04T00:00:00+02:00",
			"2026-05-04T00:00:00+02:00", "2026-05-05T00:00:00+02:00", true},
		{"all day on the short day", "00:00-24:00 Europe/Berlin", "2026-03-29T12:00:00+02:00",
			"2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", true},
		{"a zone ahead of UTC", "Mon 01:00-05:00 Asia/Tokyo", "2026-05-03T17:00:00Z",
			"2026-05-04T01:00:00+09:00", "2026-05-04T05:00:00+09:00", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := mustWindow(t, tt.window)
			at := mustTime(t, tt.at)
			start, end := w.Next(at)
			if got, want := start.Format(time.RFC3339)+" "+end.Format(time.RFC3339), tt.start+" "+tt.end; got != want {
				t.Errorf("%s: Next(%s) = %s, want %s", tt.window, tt.at, got, want)
			}
			if got := w.Contains(at); got != tt.contains {
				t.Errorf("%s: Contains(%s) = %v, want %v", tt.window, tt.at, got, tt.contains)
			}
		})
	}
}

// Over a year every occurrence has its wall-clock length in real time,
// but for the nights the clocks change.
func TestWindowAcrossAYear(t *testing.T) {
	for _, tt := range []struct {
		window  string
		lengths map[string]time.Duration // by the start's date, where not usual
		usual   time.Duration
	}{
		{"01:00-05:00 Europe/Berlin", map[string]time.Duration{"2026-03-29": 3 * time.Hour, "2026-10-25": 5 * time.Hour}, 4 * time.Hour},
		{"Sat 22:00-04:00 Europe/Berlin", map[string]time.Duration{"2026-03-28": 5 * time.Hour, "2026-10-24": 7 * time.Hour}, 6 * time.Hour},
		{"00:00-24:00 America/New_York", map[string]time.Duration{"2026-03-08": 23 * time.Hour, "2026-11-01": 25 * time.Hour}, 24 * time.Hour},
	} {
		w := mustWindow(t, tt.window)
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		seen := 0
		for at.Year() == 2026 {
			start, end := w.Next(at)
			date := start.Format(time.DateOnly)
			want, ok := tt.lengths[date]
			if !ok {
				want = tt.usual
			}
			if end.Sub(start) != want {
				t.Errorf("%s on %s: %s to %s, %v long, want %v", tt.window, date, start, end, end.Sub(start), want)
			}
			if !end.After(at) {
				t.Fatalf("%s: Next(%s) ended at %s, before it", tt.window, at, end)
			}
			at = end
			seen++
		}
		if seen < 52 {
			t.Errorf("%s: only %d occurrences in 2026", tt.window, seen)
		}
	}
}

func TestNextWindow(t *testing.T) {
	for _, tt := range []struct {
		name       string
		windows    []string
		at         string
		start, end string // "" for zero times
	}{
		{"no windows: any time", nil, "2026-05-04T12:00:00Z", "", ""},
		{"the earliest start", []string{"02:00-06:00 UTC", "01:00-03:00 UTC"}, "2026-05-04T00:00:00Z",
			"2026-05-04T01:00:00Z", "2026-05-04T03:00:00Z"},
		{"inside two: the one ending last", []string{"01:00-03:00 UTC", "02:00-06:00 UTC"}, "2026-05-04T02:30:00Z",
			"2026-05-04T02:00:00Z", "2026-05-04T06:00:00Z"},
		{"inside one, another starting later", []string{"01:00-03:00 UTC", "02:30-09:00 UTC"}, "2026-05-04T01:30:00Z",
			"2026-05-04T01:00:00Z", "2026-05-04T03:00:00Z"},
		{"inside the second only", []string{"01:00-03:00 UTC", "02:00-06:00 UTC"}, "2026-05-04T03:30:00Z",
			"2026-05-04T02:00:00Z", "2026-05-04T06:00:00Z"},
		{"after both: tomorrow", []string{"01:00-03:00 UTC", "02:00-06:00 UTC"}, "2026-05-04T07:00:00Z",
			"2026-05-05T01:00:00Z", "2026-05-05T03:00:00Z"},
		{"same start: the longer", []string{"01:00-02:00 UTC", "01:00-04:00 UTC"}, "2026-05-04T00:00:00Z",
			"2026-05-04T01:00:00Z", "2026-05-04T04:00:00Z"},
		{"across zones", []string{"Mon-Fri 01:00-05:00 Europe/Berlin", "Sat,Sun 22:00-02:00 UTC"}, "2026-05-08T12:00:00Z",
			"2026-05-09T22:00:00Z", "2026-05-10T02:00:00Z"},
		{"across zones, the other", []string{"Mon-Fri 01:00-05:00 Europe/Berlin", "Sat,Sun 22:00-02:00 UTC"}, "2026-05-11T02:30:00Z",
			"2026-05-11T01:00:00+02:00", "2026-05-11T05:00:00+02:00"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ws []update.Window
			for _, s := range tt.windows {
				ws = append(ws, mustWindow(t, s))
			}
			start, end := update.NextWindow(ws, mustTime(t, tt.at))
			format := func(at time.Time) string {
				if at.IsZero() {
					return ""
				}
				return at.Format(time.RFC3339)
			}
			if got, want := format(start)+" "+format(end), tt.start+" "+tt.end; got != want {
				t.Errorf("NextWindow(%q, %s) = %q, want %q", tt.windows, tt.at, got, want)
			}
		})
	}
}

// FuzzParseWindow checks that every window the parser accepts reads back
// from its canonical form unchanged and has a next occurrence that ends
// after the time asked about.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{
		"Mon-Fri 01:00-05:00 Europe/Berlin", "sat, sun 22:00 - 02:00 utc", "02:00-04:00",
		"daily 00:00-24:00 America/New_York", "Fri-Mon,Wed 02:00-02:30 Europe/Berlin",
		"24:00-02:00", "01:00-01:00", "Mon-Fry 01:00-05:00", "01:00-05:00 Local",
	} {
		f.Add(s)
	}
	at := time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		w, err := update.ParseWindow(s)
		if err != nil {
			if fota.ErrorCode(err) != fota.EINVALID {
				t.Fatalf("ParseWindow(%q): %v, want EINVALID", s, err)
			}
			return
		}
		again, err := update.ParseWindow(w.String())
		if err != nil {
			t.Fatalf("ParseWindow(%q) accepted, but not its canonical form %q: %v", s, w.String(), err)
		}
		if again.String() != w.String() {
			t.Fatalf("canonical form %q reads back as %q", w.String(), again.String())
		}
		start, end := w.Next(at)
		if !start.Before(end) || !end.After(at) || w.Contains(at) != !at.Before(start) {
			t.Fatalf("%s: Next(%s) = %s, %s; Contains = %v", w, at, start, end, w.Contains(at))
		}
	})
}
