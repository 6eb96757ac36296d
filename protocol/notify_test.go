package protocol

import (
	"strings"
	"testing"
	"time"
)

func TestNotificationRoundTrip(t *testing.T) {
	n := Notification{Reason: NotifyRollout, Rollout: 12, SpreadMS: 2500}
	b := n.Marshal()
	if string(b) != `{"v":1,"reason":"rollout","rollout":12,"spread_ms":2500}` {
		t.Fatalf("payload %s", b)
	}
	got, err := ParseNotification(b)
	if err != nil || got.Reason != NotifyRollout || got.Rollout != 12 || got.Spread() != 2500*time.Millisecond {
		t.Fatalf("parsed %+v, %v", got, err)
	}
}

func TestNotificationRefused(t *testing.T) {
	for name, payload := range map[string]string{
		"empty":      ``,
		"not json":   `check now`,
		"version 2":  `{"v":2,"reason":"rollout"}`,
		"no version": `{"reason":"rollout"}`,
		"too long":   `{"v":1,"reason":"` + strings.Repeat("x", MaxNotificationSize) + `"}`,
	} {
		if _, err := ParseNotification([]byte(payload)); err == nil {
			t.Errorf("%s: accepted %q", name, payload)
		}
	}
}

func TestNotificationSpreadCapped(t *testing.T) {
	if got := (Notification{SpreadMS: 3_600_000}).Spread(); got != MaxNotifySpread {
		t.Fatalf("a spread of an hour reads as %v, want %v", got, MaxNotifySpread)
	}
	if got := (Notification{SpreadMS: 9_200_000_000_000_000}).Spread(); got != MaxNotifySpread {
		t.Fatalf("a spread that overflows a Duration in ns reads as %v, want %v", got, MaxNotifySpread)
	}
	if got := (Notification{SpreadMS: -5}).Spread(); got != 0 {
		t.Fatalf("negative spread reads as %v", got)
	}
}
