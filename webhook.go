package fota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// Webhook is an HTTP endpoint that events are POSTed to, signed with its
// secret. Events reach it through an outbox in the store (its
// deliveries), so a crash of any replica loses none: each is sent at
// least once, retried for DeliveryRetryFor.
type Webhook struct {
	ID     int64
	URL    string
	Events []string // patterns, as ParseWebhookEvents returns them
	// Secret keys the deliveries' signatures. Stored, never listed: only
	// ClaimDeliveries reads it back, to sign.
	Secret  WebhookSecret
	Created time.Time
	// Pending and Failed count its deliveries in those states (Webhooks
	// fills them in).
	Pending, Failed int
}

// WebhookSecret is a webhook's signing key. It formats and logs as
// REDACTED, so it cannot reach a log line or an error by accident.
type WebhookSecret string

func (WebhookSecret) String() string               { return "REDACTED" }
func (WebhookSecret) GoString() string             { return "REDACTED" }
func (WebhookSecret) LogValue() slog.Value         { return slog.StringValue("REDACTED") }
func (WebhookSecret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// Webhook limits.
const (
	MinWebhookSecret = 16 // bytes: guessing 128 bits is out of reach
	MaxWebhookSecret = 1024
	MaxWebhookURL    = 2048
)

// Webhook event kinds: a webhook's own creation and removal. They are
// recorded like every change but not delivered (WebhookEventName is ""):
// a receiver is told about the fleet, not about the webhooks.
const (
	EventWebhookCreated = "webhook-created"
	EventWebhookRemoved = "webhook-removed"
)

// deliveredKinds are the event kinds webhooks can receive, in the order
// of the list an invalid pattern is answered with.
var deliveredKinds = []string{
	EventRolloutCreated, EventRolloutWaveOpened, EventRolloutPaused, EventRolloutResumed, EventRolloutHalted,
	EventRolloutAborted, EventRolloutCompleted, EventRolloutSuperseded,
	EventSessionOpened, EventProgress, EventDownloaded, EventVerified, EventApplied, EventConfirmed, EventRolledBack,
	EventFailed, EventAbandoned, EventNotApplied, EventRefused, EventAssigned, EventDeviceAdded, EventDeviceRemoved,
	EventLabels, EventAPIPolicy, EventBackoffClear,
	EventPublished, EventDeleted, EventWithdrawn,
	EventTokenCreated, EventTokenRevoked,
}

// WebhookEventName is the name webhooks know an event kind by: rollout-*
// kinds are "rollout.<rest>" (rollout-wave-opened: rollout.wave_opened),
// what happens to a device or its sessions "device.<kind>"
// (rolled-back: device.rolled_back), releases "release.published",
// "release.deleted", "release.withdrawn", tokens "token.created" and
// "token.revoked"; "-" becomes "_". It is "" for a kind webhooks do not
// receive.
func WebhookEventName(kind string) string {
	under := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	switch kind {
	case EventSessionOpened, EventProgress, EventDownloaded, EventVerified, EventApplied, EventConfirmed, EventRolledBack,
		EventFailed, EventAbandoned, EventNotApplied, EventRefused, EventAssigned, EventDeviceAdded, EventDeviceRemoved,
		EventLabels, EventAPIPolicy, EventBackoffClear:
		return "device." + under(kind)
	case EventPublished:
		return "release.published"
	case EventDeleted:
		return "release.deleted"
	case EventWithdrawn:
		return "release.withdrawn"
	case EventTokenCreated:
		return "token.created"
	case EventTokenRevoked:
		return "token.revoked"
	}
	if rest, ok := strings.CutPrefix(kind, "rollout-"); ok && rest != "" {
		return "rollout." + under(rest)
	}
	return ""
}

// WebhookEventNames lists every name a webhook can receive.
func WebhookEventNames() []string {
	names := make([]string, 0, len(deliveredKinds))
	for _, k := range deliveredKinds {
		names = append(names, WebhookEventName(k))
	}
	return names
}

// ParseWebhookEvents checks a webhook's event patterns, given as a list
// or comma lists ("rollout.*,device.rolled_back"), and returns them one
// per pattern, trimmed, without repeats. A pattern is an event name whose
// dot-separated parts may hold * (any run of characters within the part),
// or * alone for every event; each must match at least one event, so a
// misspelt name is refused (EINVALID, with the names there are) instead of
// silently never matching.
func ParseWebhookEvents(lists []string) ([]string, error) {
	var out []string
	for _, list := range lists {
		for p := range strings.SplitSeq(list, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if len(p) > 64 || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789_.*") != "" {
				return nil, Errorf(EINVALID, "event pattern %.70q: use event names such as device.rolled_back, with * for any part (rollout.*)", p)
			}
			if !slices.ContainsFunc(WebhookEventNames(), func(name string) bool { return webhookPatternMatches(p, name) }) {
				return nil, Errorf(EINVALID, "event pattern %q matches no event; the events are: %s", p, strings.Join(WebhookEventNames(), ", "))
			}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		return nil, Errorf(EINVALID, "a webhook needs at least one event pattern, such as rollout.* or device.rolled_back (* for all)")
	}
	if len(out) > 64 {
		return nil, Errorf(EINVALID, "%d event patterns; at most 64", len(out))
	}
	return out, nil
}

// WebhookMatches reports whether an event name matches any of patterns.
func WebhookMatches(patterns []string, name string) bool {
	if name == "" {
		return false
	}
	for _, p := range patterns {
		if webhookPatternMatches(p, name) {
			return true
		}
	}
	return false
}

// webhookPatternMatches matches one pattern: * alone matches every name;
// otherwise the parts are matched one by one, * within a part matching
// any run of characters but never a dot.
func webhookPatternMatches(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	pp, np := strings.Split(pattern, "."), strings.Split(name, ".")
	if len(pp) != len(np) {
		return false
	}
	for i := range pp {
		if !globMatch(pp[i], np[i]) {
			return false
		}
	}
	return true
}

// globMatch matches s against p, where * matches any run of characters.
func globMatch(p, s string) bool {
	pieces := strings.Split(p, "*")
	if len(pieces) == 1 {
		return p == s
	}
	first, last := pieces[0], pieces[len(pieces)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	// The pieces between stars must appear in order; the leftmost place
	// for each leaves the most room for the rest.
	for _, piece := range pieces[1 : len(pieces)-1] {
		j := strings.Index(s, piece)
		if j < 0 {
			return false
		}
		s = s[j+len(piece):]
	}
	return true
}

// PrepareWebhook checks a webhook before a store keeps it: an http or
// https URL without credentials in it (the list shows URLs to read
// tokens; the signature is what authenticates the server), valid event
// patterns, a secret of MinWebhookSecret to MaxWebhookSecret bytes.
func PrepareWebhook(w *Webhook) error {
	if len(w.URL) > MaxWebhookURL {
		return Errorf(EINVALID, "webhook URL is %d bytes; at most %d", len(w.URL), MaxWebhookURL)
	}
	u, err := url.Parse(w.URL)
	switch {
	case err != nil || !PlainText(w.URL):
		return Errorf(EINVALID, "webhook URL is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return Errorf(EINVALID, "webhook URL %.80q: want an http:// or https:// URL", w.URL)
	case u.Host == "":
		return Errorf(EINVALID, "webhook URL %.80q has no host", w.URL)
	case u.User != nil:
		return Errorf(EINVALID, "webhook URL must not carry a user name or password: URLs are listed to read tokens, and the signature authenticates fota to the receiver")
	case u.Fragment != "":
		return Errorf(EINVALID, "webhook URL %.80q has a #fragment, which is never sent", w.URL)
	}
	events, err := ParseWebhookEvents(w.Events)
	if err != nil {
		return err
	}
	w.Events = events
	switch n := len(w.Secret); {
	case n < MinWebhookSecret:
		return Errorf(EINVALID, "webhook secret is %d bytes; it needs at least %d (e.g. openssl rand -hex 32)", n, MinWebhookSecret)
	case n > MaxWebhookSecret:
		return Errorf(EINVALID, "webhook secret is %d bytes; at most %d", n, MaxWebhookSecret)
	}
	return nil
}

// WebhookCreatedEvent is the event a new webhook records: its id, the
// host it posts to (not the whole URL, whose path may be a credential of
// the receiver's) and its patterns; never its secret.
func WebhookCreatedEvent(w *Webhook) *Event {
	return &Event{Time: w.Created, Kind: EventWebhookCreated,
		Detail: fmt.Sprintf("webhook %d to %s for %s", w.ID, webhookHost(w.URL), strings.Join(w.Events, ","))}
}

// WebhookRemovedEvent is the event a webhook's removal records.
func WebhookRemovedEvent(w *Webhook, at time.Time) *Event {
	return &Event{Time: at, Kind: EventWebhookRemoved, Detail: fmt.Sprintf("webhook %d to %s", w.ID, webhookHost(w.URL))}
}

// webhookHost is the host of a webhook URL, for event details: the rest
// of the URL may be a credential of the receiver's.
func webhookHost(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return "?"
}

// Delivery states.
const (
	DeliveryPending   = "pending"   // to be sent, at NextAttempt
	DeliveryDelivered = "delivered" // the receiver answered 2xx
	DeliveryFailed    = "failed"    // no 2xx within DeliveryRetryFor
)

// DeliveryRetryFor is how long a delivery is tried: it fails once its
// next attempt would fall later than this after it was created.
const DeliveryRetryFor = 24 * time.Hour

// Delivery is one event on its way to one webhook: the outbox row. Its ID
// is sent with it and is the same on every attempt, so receivers drop
// repeats by it.
type Delivery struct {
	ID          string // 32 hex digits, random
	WebhookID   int64
	EventID     int64
	Event       string // the webhook event name
	Payload     []byte // the JSON body, fixed when the delivery is made
	State       string
	Attempts    int
	NextAttempt time.Time
	LeaseUntil  time.Time // a dispatcher is sending it until then
	LastStatus  int       // HTTP status of the last attempt; 0 if none came
	LastError   string    // why the last attempt failed, "" if it did not
	LastAttempt time.Time
	Created     time.Time
	Delivered   time.Time // zero until delivered

	// URL and Secret are the webhook's, filled in by ClaimDeliveries only:
	// what a dispatcher needs to send it.
	URL    string
	Secret WebhookSecret
}

// NewDeliveryID returns 128 random bits in hex.
func NewDeliveryID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make delivery id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// NewDelivery makes the delivery of event e to webhook w if w's patterns
// match it, or returns nil: the one rule of what each store's FanOut
// inserts.
func NewDelivery(w *Webhook, e *Event, now time.Time) (*Delivery, error) {
	name := WebhookEventName(e.Kind)
	if !WebhookMatches(w.Events, name) {
		return nil, nil
	}
	id, err := NewDeliveryID()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(protocol.WebhookEvent{ID: id, Event: name, Time: e.Time.UTC(), DeviceID: e.DeviceID,
		ReleaseVersion: e.ReleaseVersion, SessionID: e.SessionID, RolloutID: e.RolloutID, API: e.API, Detail: e.Detail, Actor: e.Actor})
	if err != nil {
		return nil, fmt.Errorf("encode webhook event: %w", err)
	}
	return &Delivery{ID: id, WebhookID: w.ID, EventID: e.ID, Event: name, Payload: body, State: DeliveryPending,
		NextAttempt: now, Created: now}, nil
}

// DeliveryAttempt is the outcome of sending a delivery once, as
// NextAttempt decides it.
type DeliveryAttempt struct {
	State       string    // DeliveryDelivered, DeliveryPending (to retry) or DeliveryFailed
	NextAttempt time.Time // for DeliveryPending
	Status      int       // HTTP status, 0 if none came
	Error       string    // "" for a delivery
	At          time.Time // when it was made
}

// NextAttempt decides what an attempt at d made at now leads to: delivered
// on a 2xx status; else a retry after backoff, but never later than
// DeliveryRetryFor after d was created (the last try is at that mark), and
// failed once that mark has passed.
func NextAttempt(d *Delivery, now time.Time, status int, errText string, backoff time.Duration) DeliveryAttempt {
	a := DeliveryAttempt{Status: status, Error: errText, At: now}
	if errText == "" && status >= 200 && status < 300 {
		a.State = DeliveryDelivered
		return a
	}
	deadline := d.Created.Add(DeliveryRetryFor)
	if !now.Before(deadline) {
		a.State = DeliveryFailed
		return a
	}
	a.State, a.NextAttempt = DeliveryPending, now.Add(backoff)
	if a.NextAttempt.After(deadline) {
		a.NextAttempt = deadline
	}
	return a
}

// WebhookStore keeps webhooks and their outbox of deliveries. Replicas
// share it: fanning out and claiming are safe to run on all of them at
// once.
type WebhookStore interface {
	// CreateWebhook stores w (ID and Created set; PrepareWebhook applied)
	// with its secret and a webhook-created event. Only events recorded
	// after it reach it. Durable. Errors: EINVALID from PrepareWebhook.
	CreateWebhook(ctx context.Context, w *Webhook) error
	// Webhooks lists webhooks by id, with their pending and failed
	// counts; secrets are left out.
	Webhooks(ctx context.Context) ([]*Webhook, error)
	// RemoveWebhook deletes a webhook with all its deliveries, pending ones
	// too (they are never sent), and records a webhook-removed event.
	// Durable. Errors: ENOTFOUND.
	RemoveWebhook(ctx context.Context, id int64) error
	// FanOut turns events into deliveries: for each webhook, in one
	// transaction, it reads up to batch events recorded after its cursor,
	// inserts a delivery (NewDelivery) for each it matches, and moves the
	// cursor past them. Callers on several replicas at once make each
	// delivery once, and an event becomes visible to the cursor only when
	// no event recorded before it can still appear (PostgreSQL numbers
	// events before their transactions commit). It returns how many
	// deliveries it made, and whether any webhook has more events to read.
	// Durable: a delivery sent is never made again under a new id.
	FanOut(ctx context.Context, batch int) (made int, more bool, err error)
	// ClaimDeliveries leases up to limit pending deliveries due at now
	// (NextAttempt not after now, no lease in force) until now+lease,
	// oldest due first, and returns them with their webhook's URL and
	// secret. A delivery is leased to one caller at a time, across
	// replicas. Fast: a lease lost to a crash only delays the delivery.
	ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*Delivery, error)
	// RecordAttempt records an attempt at a pending delivery (attempts
	// counted, its lease ended) and moves it to a.State. Fast: an attempt
	// lost to a crash is made again, under the same delivery id. Errors:
	// ENOTFOUND (its webhook was removed meanwhile); ECONFLICT if it is no
	// longer pending (another replica finished it after its lease ran out).
	RecordAttempt(ctx context.Context, id string, a DeliveryAttempt) error
	// Deliveries lists a webhook's deliveries, newest event first, at most
	// limit (0: 100). Errors: ENOTFOUND for an unknown webhook.
	Deliveries(ctx context.Context, webhookID int64, limit int) ([]*Delivery, error)
	// PruneDeliveries deletes up to batch delivered and failed deliveries
	// created before before, and returns how many. Fast.
	PruneDeliveries(ctx context.Context, before time.Time, batch int) (int, error)
}
