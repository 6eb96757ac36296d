package fota

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestWebhookEventName(t *testing.T) {
	for kind, want := range map[string]string{
		EventRolloutWaveOpened: "rollout.wave_opened",
		EventRolloutHalted:     "rollout.halted",
		EventSessionOpened:     "device.session_opened",
		EventRolledBack:        "device.rolled_back",
		EventNotApplied:        "device.not_applied",
		EventLabels:            "device.labels",
		EventBackoffClear:      "device.backoff_cleared",
		EventDeviceAdded:       "device.device_added",
		EventPublished:         "release.published",
		EventDeleted:           "release.deleted",
		EventWithdrawn:         "release.withdrawn",
		EventTokenCreated:      "token.created",
		EventTokenRevoked:      "token.revoked",
		EventWebhookCreated:    "",
		EventWebhookRemoved:    "",
		"rollout-":             "",
		"something-new":        "",
	} {
		if got := WebhookEventName(kind); got != want {
			t.Errorf("WebhookEventName(%q) = %q, want %q", kind, got, want)
		}
	}
	seen := map[string]bool{}
	for _, name := range WebhookEventNames() {
		if name == "" || seen[name] {
			t.Fatalf("event names %v: empty or repeated %q", WebhookEventNames(), name)
		}
		seen[name] = true
	}
}

func TestWebhookPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		match         bool
	}{
		{"*", "device.rolled_back", true},
		{"*", "rollout.halted", true},
		{"rollout.*", "rollout.wave_opened", true},
		{"rollout.*", "device.rolled_back", false},
		{"device.rolled_back", "device.rolled_back", true},
		{"device.rolled_back", "device.rolled_back_x", false},
		{"*.failed", "device.failed", true},
		{"*.*", "token.created", true},
		{"device.session_*", "device.session_opened", true},
		{"device.*ed", "device.confirmed", true},
		{"device.*ed", "device.progress", false},
		{"device.*_*", "device.rolled_back", true},
		{"device.*_*", "device.failed", false},
		{"device.r*b*k", "device.rolled_back", true},
		{"device.*e*e*", "device.verified", true},
		{"device.*e*e*", "device.failed", false},
		{"device", "device.failed", false},
		{"device.failed.*", "device.failed", false},
	} {
		if got := WebhookMatches([]string{tc.pattern}, tc.name); got != tc.match {
			t.Errorf("%q matching %q: %v, want %v", tc.pattern, tc.name, got, tc.match)
		}
	}
	if WebhookMatches([]string{"*"}, "") {
		t.Error(`"*" matches an event webhooks do not receive`)
	}

	got, err := ParseWebhookEvents([]string{" rollout.* ,device.rolled_back,,", "rollout.*", "*"})
	if err != nil || fmt.Sprint(got) != "[rollout.* device.rolled_back *]" {
		t.Fatalf("parsed %v, %v", got, err)
	}
	for list, want := range map[string]string{
		"":                      "at least one",
		"rollout":               "matches no event; the events are: rollout.created",
		"device.rollback":       "matches no event",
		"rolled-back":           "use event names",
		"Device.Failed":         "use event names",
		"device.failed!":        "use event names",
		"release.?":             "use event names",
		"webhook.created":       "matches no event",
		strings.Repeat("a", 65): "use event names",
	} {
		_, err := ParseWebhookEvents([]string{list})
		if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), want) {
			t.Errorf("%q: %v, want EINVALID saying %q", list, err, want)
		}
	}
}

func TestNextAttempt(t *testing.T) {
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	d := &Delivery{Created: created}
	deadline := created.Add(DeliveryRetryFor)
	for _, tc := range []struct {
		name   string
		now    time.Time
		status int
		err    string
		state  string
		next   time.Time
	}{
		{"2xx", created, 204, "", DeliveryDelivered, time.Time{}},
		{"500", created, 500, "HTTP 500", DeliveryPending, created.Add(time.Minute)},
		{"redirect", created, 302, "HTTP 302", DeliveryPending, created.Add(time.Minute)},
		{"no answer", created, 0, "connection refused", DeliveryPending, created.Add(time.Minute)},
		{"2xx with an error", created, 200, "answer cut off", DeliveryPending, created.Add(time.Minute)},
		{"last retry at the mark", deadline.Add(-30 * time.Second), 500, "HTTP 500", DeliveryPending, deadline},
		{"at the mark", deadline, 500, "HTTP 500", DeliveryFailed, time.Time{}},
		{"past the mark", deadline.Add(time.Hour), 0, "timeout", DeliveryFailed, time.Time{}},
		{"delivered past the mark", deadline.Add(time.Hour), 200, "", DeliveryDelivered, time.Time{}},
	} {
		a := NextAttempt(d, tc.now, tc.status, tc.err, time.Minute)
		if a.State != tc.state || !a.NextAttempt.Equal(tc.next) || a.Status != tc.status || a.Error != tc.err || !a.At.Equal(tc.now) {
			t.Errorf("%s: %+v, want %s next %v", tc.name, a, tc.state, tc.next)
		}
	}
}

func TestNewDeliveryPayload(t *testing.T) {
	w := &Webhook{ID: 3, Events: []string{"device.*"}}
	at := time.Date(2026, 12, 1, 10, 0, 0, 123e6, time.UTC)
	e := &Event{ID: 41, Time: at, Kind: EventRolledBack, DeviceID: "d1", ReleaseVersion: "1.0.5", SessionID: "s9",
		Detail: "self-test failed", Actor: "", RolloutID: 7, API: APIEcoWatt}
	d, err := NewDelivery(w, e, at.Add(time.Second))
	if err != nil || d == nil {
		t.Fatalf("NewDelivery: %v, %v", d, err)
	}
	var p map[string]any
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": d.ID, "event": "device.rolled_back", "time": "2026-12-01T10:00:00.123Z", "device_id": "d1",
		"release_version": "1.0.5", "session_id": "s9", "rollout_id": 7.0, "api": "ecowatt", "detail": "self-test failed", "actor": ""}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Fatalf("payload %s\nwant %v", d.Payload, want)
	}
	if d.EventID != 41 || d.WebhookID != 3 || d.State != DeliveryPending || !d.NextAttempt.Equal(d.Created) || len(d.ID) != 32 {
		t.Fatalf("delivery %+v", d)
	}
	if d, _ := NewDelivery(w, &Event{Kind: EventRolloutHalted}, at); d != nil {
		t.Fatalf("device.* made a delivery of a rollout event: %+v", d)
	}
}

func TestWebhookSecretNeverShown(t *testing.T) {
	const text = "whsec-do-not-print-me"
	w := Webhook{URL: "https://example.com/", Secret: text}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "secret", w.Secret, "webhook", w)
	js, _ := json.Marshal(w)
	for _, out := range []string{fmt.Sprint(w.Secret), fmt.Sprintf("%v %s %q %x %#v %+v", w.Secret, w.Secret, w.Secret, w.Secret, w, w),
		logged.String(), string(js), fmt.Errorf("create: %v", w).Error()} {
		if strings.Contains(out, text) || strings.Contains(out, fmt.Sprintf("%x", []byte(text))) {
			t.Fatalf("the secret shows in %s", out)
		}
	}
}

func TestPrepareWebhook(t *testing.T) {
	ok := func() *Webhook {
		return &Webhook{URL: "https://hooks.example.com/x?y=1", Events: []string{"*"}, Secret: "0123456789abcdef"}
	}
	if err := PrepareWebhook(ok()); err != nil {
		t.Fatalf("a good webhook: %v", err)
	}
	for name, change := range map[string]func(w *Webhook){
		"javascript URL":    func(w *Webhook) { w.URL = "javascript:alert(1)" },
		"relative URL":      func(w *Webhook) { w.URL = "/hooks" },
		"control character": func(w *Webhook) { w.URL = "https://example.com/\n" },
		"fragment":          func(w *Webhook) { w.URL = "https://example.com/#x" },
		"long URL":          func(w *Webhook) { w.URL = "https://example.com/" + strings.Repeat("a", MaxWebhookURL) },
		"user":              func(w *Webhook) { w.URL = "https://me@example.com/" },
		"15-byte secret":    func(w *Webhook) { w.Secret = "0123456789abcde" },
		"huge secret":       func(w *Webhook) { w.Secret = WebhookSecret(strings.Repeat("s", MaxWebhookSecret+1)) },
		"bad pattern":       func(w *Webhook) { w.Events = []string{"device.nothing"} },
	} {
		w := ok()
		change(w)
		if err := PrepareWebhook(w); ErrorCode(err) != EINVALID {
			t.Errorf("%s: %v, want EINVALID", name, err)
		}
	}
}
