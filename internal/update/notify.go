package update

import (
	"context"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// DefaultNotifyRate is how many woken devices a second the server asks to
// arrive at most: a notification to n devices asks each to check at a
// random moment within n / rate seconds (protocol.Notification.SpreadMS).
const DefaultNotifyRate = 4000

// notifyTimeout bounds the read of who to notify after a transition.
const notifyTimeout = 30 * time.Second

// Who a change wakes (docs/PROTOCOL.md, "Push: MQTT notifications"):
//
//   - a wave opens (a rollout starts, or the next wave opens): the members
//     of that wave not yet offered; resumed: the members of the open waves
//     not yet offered;
//   - paused: the members with a session open (they learn to finish or
//     wait at their next request anyway; this saves them guessing);
//   - halted or aborted: the devices whose sessions it ended, so they stop
//     downloading a release that will not be installed;
//   - pinned or unpinned: the device;
//   - a maintenance window of a running rollout opens: the members of its
//     open waves not offered yet. A wave that opens (or a rollout that
//     starts or resumes) outside its windows wakes nobody: nothing would
//     be offered; its devices are woken when the window opens.
//
// A device not woken (offline, say) checks on its timer as before.

// spread is the notification spread for n devices.
func (s *Service) spread(n int) int64 {
	ms := int64(n) * 1000 / int64(s.notifyRate)
	return min(ms, protocol.MaxNotifySpread.Milliseconds())
}

func (s *Service) notify(ids []string, reason string, rolloutID int64) {
	if s.notifier == nil || len(ids) == 0 {
		return
	}
	s.notifier.Notify(ids, protocol.Notification{V: 1, Reason: reason, Rollout: rolloutID, SpreadMS: s.spread(len(ids))})
	s.log.Info("devices notified", "reason", reason, "rollout_id", rolloutID, "devices", len(ids))
}

// notifyTransition wakes the devices a rollout's transition t concerns, in
// the background (the operator's request or the tick does not wait for
// the members to be read); ended are the sessions t ended.
func (s *Service) notifyTransition(r *fota.Rollout, t fota.RolloutTransition, ended []*fota.Session) {
	if s.notifier == nil {
		return
	}
	endedIDs := make([]string, 0, len(ended))
	for _, sess := range ended {
		endedIDs = append(endedIDs, sess.DeviceID)
	}
	s.notifying.Add(1)
	go func() {
		defer s.notifying.Done()
		ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
		defer cancel()
		var reason string
		var want func(m *fota.RolloutMember) bool
		if t.State == fota.RolloutRunning && !s.inWindow(r) {
			return // woken when the window opens (notifyOpenedWindows)
		}
		switch {
		case t.State == fota.RolloutRunning && t.Event == fota.EventRolloutWaveOpened:
			reason = protocol.NotifyRollout
			want = func(m *fota.RolloutMember) bool { return m.Wave == t.Wave && m.State == fota.MemberPending }
		case t.State == fota.RolloutRunning && t.Event == fota.EventRolloutResumed:
			reason = protocol.NotifyRollout
			want = func(m *fota.RolloutMember) bool { return m.Wave <= t.Wave && m.State == fota.MemberPending }
		case t.State == fota.RolloutPaused:
			reason = protocol.NotifyPaused
			want = func(m *fota.RolloutMember) bool { return offered(m.State) }
		case t.State == fota.RolloutHalted:
			s.notify(endedIDs, protocol.NotifyHalted, r.ID)
			return
		case t.State == fota.RolloutAborted:
			s.notify(endedIDs, protocol.NotifyAborted, r.ID)
			return
		default:
			return
		}
		members, err := s.store.RolloutMembers(ctx, r.ID, time.Time{})
		if err != nil {
			s.log.Warn("read rollout members to notify; they check on their timer", "rollout_id", r.ID, "err", err)
			return
		}
		var ids []string
		for _, m := range members {
			if want(m) {
				ids = append(ids, m.DeviceID)
			}
		}
		s.notify(ids, reason, r.ID)
	}()
}

// offered reports whether a member reading state has a session open.
func offered(state string) bool {
	return state == fota.MemberOffered || state == fota.MemberDownloading || state == fota.MemberSilent
}

// WaitNotified waits until the notifications of past transitions have
// been handed to the notifier (tests; and shutdown, so none is dropped).
func (s *Service) WaitNotified() { s.notifying.Wait() }

// inWindow reports whether r offers now as far as its maintenance windows
// go (a rollout without windows always does).
func (s *Service) inWindow(r *fota.Rollout) bool {
	ws, err := s.windows.get(r)
	if err != nil || len(ws) == 0 {
		return true
	}
	now := s.now()
	for _, w := range ws {
		if w.Contains(now) {
			return true
		}
	}
	return false
}

// notifyOpenedWindows wakes the devices of running rollouts whose
// maintenance window opened since the last tick: outside the window they
// were offered nothing, and would otherwise wait for their timer. Each
// replica's tick does it, so with several replicas a device may be woken
// more than once; devices coalesce those into one check.
func (s *Service) notifyOpenedWindows(rollouts []*fota.Rollout) {
	now := s.now()
	s.windowTickMu.Lock()
	last := s.lastWindowTick
	s.lastWindowTick = now
	s.windowTickMu.Unlock()
	if s.notifier == nil || last.IsZero() {
		return // the first tick cannot tell what opened since
	}
	for _, r := range rollouts {
		if r.State != fota.RolloutRunning || len(r.Windows) == 0 {
			continue
		}
		ws, err := s.windows.get(r)
		if err != nil {
			continue
		}
		for _, w := range ws {
			if w.Contains(now) && !w.Contains(last) {
				s.notifyTransition(r, fota.RolloutTransition{State: fota.RolloutRunning, Wave: r.Wave, Event: fota.EventRolloutResumed}, nil)
				break
			}
		}
	}
}
