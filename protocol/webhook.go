package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhooks: what the admin API takes and shows, and what a webhook
// receiver gets. docs/OPERATIONS.md#webhooks describes them.

// CreateWebhook is the body of POST /v1/admin/webhooks.
type CreateWebhook struct {
	URL    string   `json:"url"`
	Events []string `json:"events"` // patterns: "rollout.*", "device.rolled_back", "*"
	Secret string   `json:"secret"` // at least 16 bytes; never shown again
}

// Webhook is a webhook as the admin API shows it: never its secret.
type Webhook struct {
	ID      int64     `json:"id"`
	URL     string    `json:"url"`
	Events  []string  `json:"events"`
	Created time.Time `json:"created"`
	Pending int       `json:"pending"` // deliveries still being tried
	Failed  int       `json:"failed"`  // deliveries given up on
}

// Delivery is one event's delivery to a webhook, as the admin API shows it.
type Delivery struct {
	ID          string    `json:"id"`
	EventID     int64     `json:"event_id"`
	Event       string    `json:"event"`
	State       string    `json:"state"` // pending, delivered, failed
	Attempts    int       `json:"attempts"`
	LastStatus  int       `json:"last_status,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // while pending
	Created     time.Time `json:"created"`
	Delivered   time.Time `json:"delivered,omitzero"`
}

// WebhookEvent is the JSON body POSTed to a webhook.
type WebhookEvent struct {
	ID             string    `json:"id"`    // the delivery id: the same on every retry
	Event          string    `json:"event"` // e.g. device.rolled_back
	Time           time.Time `json:"time"`  // when it happened
	DeviceID       string    `json:"device_id"`
	ReleaseVersion string    `json:"release_version"`
	SessionID      string    `json:"session_id"`
	RolloutID      int64     `json:"rollout_id"`
	// API is the device API of the session a device event is about:
	// "native" (the device's authenticated requests) or "ecowatt" (the
	// original firmware's, which anyone who knows a device id can send);
	// "" for other events.
	API    string `json:"api"`
	Detail string `json:"detail"`
	Actor  string `json:"actor"` // "token:NAME" for an operator's change
}

// Headers of a webhook delivery; the timestamp and signature have the
// same names as a device request's (HeaderTimestamp, HeaderSignature).
const (
	HeaderWebhookDelivery = "X-Fota-Delivery"
	HeaderWebhookEvent    = "X-Fota-Event"
)

// WebhookMaxAge is how old a delivery's timestamp a receiver should take
// (VerifyWebhook's default): each attempt is signed afresh, so only a
// replay is older.
const WebhookMaxAge = 5 * time.Minute

// WebhookSignature is the X-Fota-Signature of a delivery: "sha256=" and
// the hex HMAC-SHA256, keyed with the webhook's secret, of the timestamp
// (Unix seconds, in decimal, as X-Fota-Timestamp carries it), ".", and
// the body.
func WebhookSignature(secret []byte, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(strconv.AppendInt(nil, timestamp, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Errors of VerifyWebhook.
var (
	ErrWebhookSignature = errors.New("webhook signature does not match")
	ErrWebhookStale     = errors.New("webhook timestamp is too far from the receiver's clock")
)

// VerifyWebhook checks a delivery as a receiver gets it: the signature
// over the timestamp and body, then that the timestamp is within maxAge
// of now (WebhookMaxAge when 0), so that a recorded delivery cannot be
// replayed later. Receivers should still drop delivery ids they have
// seen: a delivery may arrive more than once.
func VerifyWebhook(h http.Header, body, secret []byte, now time.Time, maxAge time.Duration) error {
	if maxAge <= 0 {
		maxAge = WebhookMaxAge
	}
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no valid %s header", ErrWebhookSignature, HeaderTimestamp)
	}
	got, ok := strings.CutPrefix(h.Get(HeaderSignature), "sha256=")
	want := WebhookSignature(secret, ts, body)[len("sha256="):]
	if !ok || !hmac.Equal([]byte(got), []byte(want)) {
		return ErrWebhookSignature
	}
	if age := now.Sub(time.Unix(ts, 0)); age > maxAge || age < -maxAge {
		return ErrWebhookStale
	}
	return nil
}
