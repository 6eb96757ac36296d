package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/protocol"
)

func TestParseBroker(t *testing.T) {
	for _, row := range []struct {
		in, addr string
		tls      bool
		err      string
	}{
		{in: "mqtt://broker.example", addr: "broker.example:1883"},
		{in: "tcp://127.0.0.1:1884", addr: "127.0.0.1:1884"},
		{in: "mqtts://broker.example", addr: "broker.example:8883", tls: true},
		{in: "ssl://broker.example:9000", addr: "broker.example:9000", tls: true},
		{in: "TLS://[::1]", addr: "[::1]:8883", tls: true},
		{in: "mqtt://broker.example/", addr: "broker.example:1883"},
		{in: "://bad", err: "missing protocol scheme"},
		{in: "http://broker.example", err: `scheme "http"`},
		{in: "ws://broker.example", err: `scheme "ws"`},
		{in: "broker.example:1883", err: "scheme"},
		{in: "mqtt://", err: "names no host"},
		{in: "mqtt://dev:secret@broker.example", err: "carries credentials"},
		{in: "mqtt://broker.example/fota", err: "path or query"},
	} {
		b, err := parseBroker(row.in)
		if row.err != "" {
			if err == nil || !strings.Contains(err.Error(), row.err) {
				t.Errorf("%q: error %v, want one containing %q", row.in, err, row.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%q: the error shows the password: %v", row.in, err)
			}
			continue
		}
		if err != nil || b.addr != row.addr || b.tls != row.tls {
			t.Errorf("%q: %+v %v, want %s tls=%v", row.in, b, err, row.addr, row.tls)
		}
	}
}

func TestPushDue(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, row := range []struct {
		name      string
		due, last time.Time
		want      time.Time
	}{
		{"no push check before", t0, time.Time{}, t0},
		{"interval passed", t0, t0.Add(-2 * time.Minute), t0},
		{"interval not passed", t0, t0.Add(-20 * time.Second), t0.Add(40 * time.Second)},
		{"spread ends after the interval", t0.Add(50 * time.Second), t0.Add(-20 * time.Second), t0.Add(50 * time.Second)},
	} {
		if got := pushDue(row.due, row.last, time.Minute); !got.Equal(row.want) {
			t.Errorf("%s: %v, want %v", row.name, got, row.want)
		}
	}
}

func TestPushBackoff(t *testing.T) {
	low := func(time.Duration) time.Duration { return 0 }
	high := func(n time.Duration) time.Duration { return n - 1 }
	for _, row := range []struct {
		failures  int
		low, high time.Duration
	}{
		{0, 500 * time.Millisecond, time.Second},
		{1, time.Second, 2 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{7, time.Minute, 2 * time.Minute},
		{8, time.Minute, 2 * time.Minute}, // capped
		{1000, time.Minute, 2 * time.Minute},
	} {
		if got := pushBackoff(row.failures, low); got != row.low {
			t.Errorf("failures %d, lowest draw: %v, want %v", row.failures, got, row.low)
		}
		if got := pushBackoff(row.failures, high); got != row.high {
			t.Errorf("failures %d, highest draw: %v, want %v", row.failures, got, row.high)
		}
	}
}

// Notify picks the check's moment within the notification's spread (capped
// at protocol.MaxNotifySpread), and coalesced notifications keep the
// earliest.
func TestNotifySpread(t *testing.T) {
	for _, row := range []struct {
		spreadMS int64
		max      time.Duration
	}{
		{0, 0},
		{-5, 0},
		{200, 200 * time.Millisecond},
		{int64(24 * time.Hour / time.Millisecond), protocol.MaxNotifySpread},
	} {
		var spreadSeen time.Duration
		for range 500 {
			a := &Agent{}
			before := time.Now()
			a.Notify(protocol.Notification{V: 1, SpreadMS: row.spreadMS})
			after := time.Now()
			due := a.push.due
			if !a.push.pending || due.Before(before) || due.Sub(after) > row.max || row.max > 0 && due.Sub(after) == row.max {
				t.Fatalf("spread_ms %d: due %v after the call (pending %v), want within [0, %v)", row.spreadMS, due.Sub(before), a.push.pending, row.max)
			}
			spreadSeen = max(spreadSeen, due.Sub(after))
		}
		if row.max > 0 && spreadSeen < row.max/4 {
			// 500 draws from [0, max) all below max/4: the spread is not applied.
			t.Fatalf("spread_ms %d: every due within %v of the call", row.spreadMS, spreadSeen)
		}
	}

	a := &Agent{}
	a.Notify(protocol.Notification{V: 1, SpreadMS: 60_000})
	first := a.push.due
	a.Notify(protocol.Notification{V: 1}) // no spread: at once
	if !a.push.due.Before(first) {
		t.Fatalf("a notification asking for no spread did not bring the pending check forward")
	}
	now := a.push.due
	a.Notify(protocol.Notification{V: 1, SpreadMS: 60_000})
	if !a.push.due.Equal(now) {
		t.Fatalf("a later notification with a spread put off the pending check")
	}
}
