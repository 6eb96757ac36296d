package update

import (
	"context"
	"time"
)

// Retention is how long history is kept. Zero fields keep it for ever in
// that respect. Events and ended sessions go once older than their age or
// beyond their count, whichever comes first; a removed device's tombstone
// (its row and its sessions) goes once it was removed longer ago than
// Sessions. Active sessions, and the native rollbacks and refusals that
// keep a release from a device, are never pruned. Dashboard sessions are
// not history: they go WebSessionsKept after they expired or were revoked,
// whatever Retention says.
type Retention struct {
	Events      time.Duration // events older than this go
	MaxEvents   int           // at most this many events stay
	Sessions    time.Duration // ended sessions last updated longer ago go
	MaxSessions int           // at most this many prunable sessions stay
	// Batch is the most rows one transaction deletes (DefaultPruneBatch
	// when 0), and BatchesPerTick the most transactions of each kind one
	// Prune runs (DefaultBatchesPerTick when 0): pruning a year of history
	// the first time takes many ticks, and never holds the database.
	Batch, BatchesPerTick int
}

// Defaults of Retention and of how often fota serve prunes.
const (
	DefaultRetainEvents   = 90 * 24 * time.Hour
	DefaultMaxEvents      = 1_000_000
	DefaultRetainSessions = 90 * 24 * time.Hour
	DefaultMaxSessions    = 100_000
	DefaultPruneBatch     = 500
	DefaultBatchesPerTick = 20
	DefaultPruneEvery     = 30 * time.Second
	// WebSessionsKept is how long a dashboard session that expired or was
	// revoked stays, so that its browser is told it ended rather than
	// that it is unknown.
	WebSessionsKept = 24 * time.Hour
)

// DefaultRetention is what fota serve keeps unless told otherwise.
var DefaultRetention = Retention{Events: DefaultRetainEvents, MaxEvents: DefaultMaxEvents,
	Sessions: DefaultRetainSessions, MaxSessions: DefaultMaxSessions}

// Enabled reports whether r prunes any history.
func (r Retention) Enabled() bool {
	return r.Events > 0 || r.MaxEvents > 0 || r.Sessions > 0 || r.MaxSessions > 0
}

// Pruned counts what one Prune deleted.
type Pruned struct {
	Events, Sessions, Devices, WebSessions int
}

// Prune deletes what r says is due, as of the service's clock: at most
// BatchesPerTick transactions of at most Batch rows for each kind, stopping
// a kind at its first short batch. Call it on a timer (RunPruner).
func (s *Service) Prune(ctx context.Context, r Retention) (Pruned, error) {
	var p Pruned
	batch, ticks := r.Batch, r.BatchesPerTick
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	if ticks <= 0 {
		ticks = DefaultBatchesPerTick
	}
	now := s.now()
	cutoff := func(age time.Duration) time.Time {
		if age <= 0 {
			return time.Time{}
		}
		return now.Add(-age)
	}
	// repeat runs fn until a short batch or the tick's budget.
	repeat := func(total *int, fn func() (int, error)) error {
		for range ticks {
			n, err := fn()
			*total += n
			if err != nil || n < batch {
				return err
			}
		}
		return nil
	}
	if r.Events > 0 || r.MaxEvents > 0 {
		before := cutoff(r.Events)
		if err := repeat(&p.Events, func() (int, error) { return s.store.PruneEvents(ctx, before, r.MaxEvents, batch) }); err != nil {
			return p, err
		}
	}
	if r.Sessions > 0 || r.MaxSessions > 0 {
		before := cutoff(r.Sessions)
		if err := repeat(&p.Sessions, func() (int, error) { return s.store.PruneSessions(ctx, before, r.MaxSessions, batch) }); err != nil {
			return p, err
		}
	}
	if r.Sessions > 0 {
		before := cutoff(r.Sessions)
		if err := repeat(&p.Devices, func() (int, error) { return s.store.PruneRemovedDevices(ctx, before, batch) }); err != nil {
			return p, err
		}
	}
	before := now.Add(-WebSessionsKept)
	if err := repeat(&p.WebSessions, func() (int, error) { return s.store.PruneWebSessions(ctx, before, batch) }); err != nil {
		return p, err
	}
	if p != (Pruned{}) {
		s.log.Info("history pruned", "events", p.Events, "sessions", p.Sessions, "removed_devices", p.Devices,
			"web_sessions", p.WebSessions)
	}
	return p, nil
}

// RunPruner prunes every interval until ctx ends, even when r keeps all
// history (ended dashboard sessions go all the same). A failed prune is
// logged and tried again at the next tick: what was due stays due.
func (s *Service) RunPruner(ctx context.Context, r Retention, every time.Duration) {
	if every <= 0 {
		every = DefaultPruneEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Prune(ctx, r); err != nil && ctx.Err() == nil {
				s.log.Warn("prune history", "error", err)
			}
		}
	}
}
