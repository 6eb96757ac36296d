package update

import (
	"sync"
	"time"
)

// Rate is a token bucket's shape: Burst at once, then one per Every.
type Rate struct {
	Burst int
	Every time.Duration
}

// bucket is a token bucket: tokens at time at.
type bucket struct {
	tokens float64
	at     time.Time
}

// take takes a token at now, refilling at r first. If none is left it
// returns how long until one is.
func (b *bucket) take(r Rate, now time.Time) (bool, time.Duration) {
	if b.at.IsZero() {
		b.tokens, b.at = float64(r.Burst), now
	}
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(float64(r.Burst), b.tokens+float64(elapsed)/float64(r.Every))
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(r.Every))
}

// full reports whether the bucket has refilled completely by now, so
// forgetting it changes nothing.
func (b *bucket) full(r Rate, now time.Time) bool {
	return b.tokens+float64(now.Sub(b.at))/float64(r.Every) >= float64(r.Burst)
}

// maxBuckets bounds the per-device buckets held; past it full buckets are
// dropped, and if none is full, new devices share the overall bucket only.
const maxBuckets = 100_000

// limiter bounds how fast unauthenticated requests may open sessions: per
// device and overall. It is per replica: with n replicas the overall
// bound is n times the rate.
type limiter struct {
	perDevice, overall Rate
	mu                 sync.Mutex
	devices            map[string]*bucket
	all                bucket
}

func newLimiter(perDevice, overall Rate) *limiter {
	return &limiter{perDevice: perDevice, overall: overall, devices: map[string]*bucket{}}
}

// allow takes a token for the device and one overall, or says how long to
// wait. A refusal takes nothing.
func (l *limiter) allow(deviceID string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.devices[deviceID]
	if !ok {
		if len(l.devices) >= maxBuckets {
			for id, old := range l.devices {
				if old.full(l.perDevice, now) {
					delete(l.devices, id)
				}
			}
		}
		b = &bucket{}
		if len(l.devices) < maxBuckets {
			l.devices[deviceID] = b
		}
	}
	saved := *b
	if ok, wait := b.take(l.perDevice, now); !ok {
		return false, wait
	}
	if ok, wait := l.all.take(l.overall, now); !ok {
		*b = saved
		return false, wait
	}
	return true, 0
}

// reset forgets a device's bucket: it may open a full burst again.
func (l *limiter) reset(deviceID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.devices, deviceID)
}

// refund gives back the tokens an allow took, when what they paid for
// (opening a session) did not happen: a refused open must not count.
func (l *limiter) refund(deviceID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.devices[deviceID]; ok {
		b.tokens = min(float64(l.perDevice.Burst), b.tokens+1)
	}
	l.all.tokens = min(float64(l.overall.Burst), l.all.tokens+1)
}
