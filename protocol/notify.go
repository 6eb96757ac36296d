package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Push notifications (docs/PROTOCOL.md, "Push: MQTT notifications").
//
// A notification tells a device to check in now instead of at its next
// timer tick. It carries no secret and no instruction beyond that: the
// device still checks in over the authenticated API, so a forged or
// replayed notification can only cause a check (at most one a
// NotifyMinInterval, which the device enforces).

// NotifyTopic is the MQTT topic a device subscribes to: it may subscribe
// to this one only, and publish nothing.
func NotifyTopic(deviceID string) string { return "fota/v1/devices/" + deviceID + "/notify" }

// NotifyTopicPrefix and NotifyTopicSuffix frame every device's topic.
const (
	NotifyTopicPrefix = "fota/v1/devices/"
	NotifyTopicSuffix = "/notify"
)

// mqttPasswordDomain separates the MQTT password from every other use of
// the device key.
const mqttPasswordDomain = "fota-mqtt-v1\n"

// MQTTPassword is the password a device gives the broker, with its id as
// the user name: the lowercase hex of HMAC-SHA256(PSK, "fota-mqtt-v1\n" ||
// device id). Derived, so there is no new secret to provision; one-way, so
// a broker that keeps it (or leaks it) learns nothing of the PSK, and it
// only lets its holder listen for that device's notifications.
func MQTTPassword(psk PSK, deviceID string) string {
	m := hmac.New(sha256.New, psk[:])
	m.Write([]byte(mqttPasswordDomain))
	m.Write([]byte(deviceID))
	return hex.EncodeToString(m.Sum(nil))
}

// Reasons a notification gives (a hint for logs; the device checks in
// whatever it says).
const (
	NotifyRollout = "rollout" // a rollout wave the device is in opened (or resumed)
	NotifyPaused  = "paused"  // the device's rollout was paused
	NotifyHalted  = "halted"  // the device's rollout halted itself
	NotifyAborted = "aborted" // the device's rollout was aborted
	NotifyPinned  = "pinned"  // an operator pinned (or unpinned) the device
)

// MaxNotificationSize bounds the payload a device reads; anything longer is
// not a notification.
const MaxNotificationSize = 256

// MaxNotifySpread bounds how long a notification may ask a device to wait
// before it checks: a forged one can delay a check by no more.
const MaxNotifySpread = time.Minute

// Notification is the payload published on a device's topic: JSON, at most
// MaxNotificationSize bytes.
type Notification struct {
	V      int    `json:"v"`      // 1
	Reason string `json:"reason"` // one of the Notify* reasons (others are kept, not refused)
	// Rollout is the rollout concerned, if any.
	Rollout int64 `json:"rollout,omitempty"`
	// SpreadMS asks the device to check at a random moment within this
	// many milliseconds rather than at once, so that a fleet woken together
	// does not arrive in the same instant. Devices cap it at
	// MaxNotifySpread.
	SpreadMS int64 `json:"spread_ms,omitempty"`
}

// Spread is the notification's spread, capped at MaxNotifySpread.
func (n Notification) Spread() time.Duration {
	if n.SpreadMS <= 0 {
		return 0
	}
	// Capped before the multiplication, which a huge value would overflow.
	return time.Duration(min(n.SpreadMS, MaxNotifySpread.Milliseconds())) * time.Millisecond
}

// Marshal encodes n as a payload.
func (n Notification) Marshal() []byte {
	if n.V == 0 {
		n.V = 1
	}
	b, _ := json.Marshal(n) // a struct of strings and numbers: cannot fail
	return b
}

// ParseNotification reads a payload. Devices need not parse it at all (any
// message on their topic means "check now"); those that do use this.
func ParseNotification(payload []byte) (Notification, error) {
	var n Notification
	if len(payload) > MaxNotificationSize {
		return n, fmt.Errorf("notification of %d bytes is longer than %d", len(payload), MaxNotificationSize)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&n); err != nil {
		return n, fmt.Errorf("notification is not a JSON object of v, reason, rollout and spread_ms: %w", err)
	}
	if n.V != 1 {
		return n, fmt.Errorf("notification version %d, want 1", n.V)
	}
	return n, nil
}
