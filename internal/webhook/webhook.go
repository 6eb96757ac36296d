// Package webhook delivers events to webhooks from the store's outbox.
// Every replica runs a Dispatcher; they share the outbox, so each
// delivery is sent by one of them at a time (a lease), and a replica that
// dies mid-send leaves its deliveries to the others once the lease runs
// out. Delivery is at least once: a receiver drops repeats by delivery id.
//
// What is protected, and how:
//   - The secret is shared by fota and the receiver only. It keys an
//     HMAC-SHA256 over the attempt's timestamp and the body, so a receiver
//     can tell fota's deliveries from anyone else's; the timestamp is
//     fresh on each attempt, so a receiver that refuses old ones
//     (protocol.VerifyWebhook: 5 minutes) cannot be fed a recorded
//     delivery later.
//   - Redirects are not followed: a signed delivery goes to the URL an
//     operator set and nowhere else; a 3xx is a failed attempt.
//   - The secret, the body and the URL (whose path or query may be the
//     receiver's credential) never reach a log line or a stored error:
//     logs name the webhook and delivery ids, and transport errors are
//     stored without the URL Go puts in them.
//   - Only admin tokens create webhooks; the server then posts to any
//     address the operator gave, internal ones included.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// Defaults of Config.
const (
	DefaultPoll           = time.Second
	DefaultLease          = time.Minute // well past DefaultTimeout: a lease never ends mid-send
	DefaultTimeout        = 10 * time.Second
	DefaultBatch          = 100
	DefaultWorkers        = 8
	DefaultKeepDeliveries = 30 * 24 * time.Hour
)

// The backoff between attempts: FirstRetry, doubling up to MaxRetry.
const (
	FirstRetry = 10 * time.Second
	MaxRetry   = time.Hour
)

// Bounds of one round: fan-out batches, and pruning of old deliveries.
const (
	fanOutBatchesPerRound = 10
	pruneEvery            = 10 * time.Minute
	pruneBatch            = 500
	pruneBatchesPerRound  = 20
	// maxAnswer is how much of an answer is read, so that the connection
	// can be reused; the rest is dropped with it.
	maxAnswer = 64 << 10
	// maxErrorText bounds what is stored of why an attempt failed.
	maxErrorText = 200
)

// Config configures a Dispatcher.
type Config struct {
	Store  fota.WebhookStore
	Logger *slog.Logger
	// Client sends the deliveries; NewClient(DefaultTimeout) when nil. It
	// must not follow redirects; without a Timeout it gets DefaultTimeout.
	Client *http.Client
	Poll   time.Duration // how often a round runs without Notify
	// Lease is how long a claimed delivery is this dispatcher's: at least
	// twice the client's timeout (it is raised to that).
	Lease time.Duration
	// Batch is the most events one fan-out transaction reads and the most
	// deliveries one round claims; Workers is how many are sent at once.
	Batch, Workers int
	// Now is the clock (time.Now when nil); Backoff the wait after the
	// attempt-th failed attempt (Backoff when nil). Tests set both.
	Now     func() time.Time
	Backoff func(attempt int) time.Duration
	// KeepDeliveries is how long delivered and failed deliveries stay
	// listed before they are pruned (DefaultKeepDeliveries when 0).
	KeepDeliveries time.Duration
}

// Dispatcher sends the outbox's deliveries.
type Dispatcher struct {
	store    fota.WebhookStore
	log      *slog.Logger
	client   *http.Client
	poll     time.Duration
	lease    time.Duration
	batch    int
	workers  int
	now      func() time.Time
	backoff  func(int) time.Duration
	keep     time.Duration
	wake     chan struct{}
	prunedAt time.Time
}

// New returns a Dispatcher for cfg.
func New(cfg Config) *Dispatcher {
	d := &Dispatcher{store: cfg.Store, log: cfg.Logger, client: cfg.Client, poll: cfg.Poll, lease: cfg.Lease, batch: cfg.Batch,
		workers: cfg.Workers, now: cfg.Now, backoff: cfg.Backoff, keep: cfg.KeepDeliveries, wake: make(chan struct{}, 1)}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.client == nil {
		d.client = NewClient(DefaultTimeout)
	}
	if d.poll <= 0 {
		d.poll = DefaultPoll
	}
	if d.lease <= 0 {
		d.lease = DefaultLease
	}
	if d.client.Timeout <= 0 {
		// Without a timeout an attempt could outlast any lease.
		c := *d.client
		c.Timeout = DefaultTimeout
		d.client = &c
	}
	// A lease must outlast an attempt, with room for the claim and the
	// record around it.
	d.lease = max(d.lease, 2*d.client.Timeout)
	if d.batch <= 0 {
		d.batch = DefaultBatch
	}
	if d.workers <= 0 {
		d.workers = DefaultWorkers
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.backoff == nil {
		d.backoff = Backoff
	}
	if d.keep <= 0 {
		d.keep = DefaultKeepDeliveries
	}
	return d
}

// NewClient returns the HTTP client deliveries go out with: a timeout for
// the whole attempt, and redirects returned, not followed.
func NewClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Backoff is the wait after the attempt-th failed attempt: FirstRetry,
// doubling up to MaxRetry, each shortened by up to a fifth at random so
// that deliveries that failed together (a receiver's outage) do not all
// come back together.
func Backoff(attempt int) time.Duration {
	d := FirstRetry
	for i := 1; i < attempt && d < MaxRetry; i++ {
		d *= 2
	}
	d = min(d, MaxRetry)
	return d - rand.N(d/5)
}

// Notify makes Run start a round now rather than at its next poll: the
// server calls it once it has recorded events. It never blocks.
func (d *Dispatcher) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends: a round at start, then every Poll or at
// once after Notify, and straight away again while a round left work
// behind. A failed round is logged and the next one tries again: what was
// due stays due.
func (d *Dispatcher) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-d.wake:
		}
		more, err := d.Deliver(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("webhook round", "error", err)
		}
		next := d.poll
		if more && err == nil {
			next = 0
		}
		timer.Reset(next)
	}
}

// Deliver runs one round: it fans new events out into deliveries, then
// claims the deliveries due now (at most Batch) and sends them, Workers at
// a time, recording each attempt. It reports whether it left work behind
// (more events to fan out, or a full batch claimed). Run calls it; tests
// call it directly, one round at a time.
func (d *Dispatcher) Deliver(ctx context.Context) (bool, error) {
	more := false
	for range fanOutBatchesPerRound {
		var err error
		if _, more, err = d.store.FanOut(ctx, d.batch); err != nil {
			return false, fmt.Errorf("fan out events to webhooks: %w", err)
		}
		if !more {
			break
		}
	}
	// Claimed Workers at a time and all sent at once, so that each is sent
	// within one timeout of its claim, well inside its lease: claiming the
	// whole batch up front would let the last ones' leases run out behind
	// slow receivers, and another replica send them too.
	sent := 0
	for sent < d.batch {
		limit := min(d.workers, d.batch-sent)
		due, err := d.store.ClaimDeliveries(ctx, d.now(), d.lease, limit)
		if err != nil {
			return more, fmt.Errorf("claim webhook deliveries: %w", err)
		}
		var wg sync.WaitGroup
		for _, dl := range due {
			wg.Go(func() { d.send(ctx, dl) })
		}
		wg.Wait()
		sent += len(due)
		if len(due) < limit {
			break
		}
	}
	d.prune(ctx)
	return more || sent == d.batch, nil
}

// send makes one attempt at a claimed delivery and records it.
func (d *Dispatcher) send(ctx context.Context, dl *fota.Delivery) {
	if d.now().Add(d.client.Timeout).After(dl.LeaseUntil) {
		// Too late to finish within the lease (this process stalled): the
		// delivery may be another replica's by then. It comes back.
		d.log.Debug("webhook lease too short to send", "webhook_id", dl.WebhookID, "delivery_id", dl.ID)
		return
	}
	status, errText := d.post(ctx, dl)
	if ctx.Err() != nil {
		// Shutting down: not the receiver's failure. The lease runs out and
		// this or another replica sends it again, under the same id.
		return
	}
	a := fota.NextAttempt(dl, d.now(), status, errText, d.backoff(dl.Attempts+1))
	log := d.log.With("webhook_id", dl.WebhookID, "delivery_id", dl.ID, "event", dl.Event, "attempt", dl.Attempts+1)
	if err := d.store.RecordAttempt(ctx, dl.ID, a); err != nil {
		switch fota.ErrorCode(err) {
		case fota.ENOTFOUND, fota.ECONFLICT:
			// Its webhook was removed, or another replica finished it.
			log.Debug("webhook attempt not recorded", "error", err)
		default:
			log.Warn("record webhook attempt", "error", err)
		}
		return
	}
	// The log says why no answer came; an answer's text is only stored
	// (fota webhook deliveries shows it): a receiver may echo the body.
	why := slog.Int("status", status)
	if status == 0 {
		why = slog.String("error", errText)
	}
	switch a.State {
	case fota.DeliveryPending:
		log.Warn("webhook delivery failed; will retry", why, "next_attempt", a.NextAttempt)
	case fota.DeliveryFailed:
		log.Warn("webhook delivery failed for good: no 2xx within the retry time", why, "retried_for", fota.DeliveryRetryFor)
	default:
		log.Debug("webhook delivered", "status", status)
	}
}

// post sends dl once and returns the status (0 if none came) and, unless
// it was a 2xx, why it failed.
func (d *Dispatcher) post(ctx context.Context, dl *fota.Delivery) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dl.URL, bytes.NewReader(dl.Payload))
	if err != nil {
		return 0, "the webhook URL cannot be requested"
	}
	ts := d.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fota-webhook")
	req.Header.Set(protocol.HeaderWebhookDelivery, dl.ID)
	req.Header.Set(protocol.HeaderWebhookEvent, dl.Event)
	req.Header.Set(protocol.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(protocol.HeaderSignature, protocol.WebhookSignature([]byte(dl.Secret), ts, dl.Payload))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, transportError(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, ""
	}
	msg := "HTTP " + strconv.Itoa(resp.StatusCode)
	if text := plain(answer); text != "" {
		msg += ": " + text
	}
	return resp.StatusCode, truncate(msg)
}

// transportError says why no answer came, without the URL: Go's
// *url.Error names it, and it may hold the receiver's credential.
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return truncate(err.Error())
}

// plain is the start of an answer as one line of plain text.
func plain(b []byte) string {
	if len(b) > maxErrorText {
		b = b[:maxErrorText]
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffd {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), ""))
	return strings.Join(strings.Fields(s), " ")
}

func truncate(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrorText], "") + "..."
}

// prune deletes delivered and failed deliveries older than KeepDeliveries,
// every pruneEvery at most, a bounded number of small batches at a time.
func (d *Dispatcher) prune(ctx context.Context) {
	now := d.now()
	if now.Sub(d.prunedAt) < pruneEvery {
		return
	}
	d.prunedAt = now
	total := 0
	for range pruneBatchesPerRound {
		n, err := d.store.PruneDeliveries(ctx, now.Add(-d.keep), pruneBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("prune webhook deliveries", "error", err)
			}
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		d.log.Info("webhook deliveries pruned", "count", total)
	}
}
