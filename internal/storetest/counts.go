package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
)

// SessionCounter is a store that keeps counts of its active sessions, which
// OpenSession reads for the session caps instead of counting the sessions
// at every open. The counts are kept by the database as sessions change, so
// Run checks them against ActiveSessions at the end of every test, and
// testSessionCounts after each kind of change a store makes.
type SessionCounter interface {
	// ActiveSessionCounts returns how many sessions are active: in all,
	// on the native API and on the EcoWatt API.
	ActiveSessionCounts(ctx context.Context) (total, native, ecowatt int, err error)
}

// CheckSessionCounts fails t if s keeps counts of its active sessions and
// they differ from the sessions ActiveSessions lists. It returns the total.
func CheckSessionCounts(t testing.TB, s fota.Store) int {
	t.Helper()
	c, ok := s.(SessionCounter)
	if !ok {
		return -1
	}
	ctx := context.Background()
	total, native, ecowatt, err := c.ActiveSessionCounts(ctx)
	if err != nil {
		t.Fatalf("active session counts: %v", err)
	}
	active, err := s.ActiveSessions(ctx)
	if err != nil {
		t.Fatalf("active sessions: %v", err)
	}
	var wantNative, wantEcoWatt int
	for _, sess := range active {
		switch sess.API {
		case fota.APINative:
			wantNative++
		case fota.APIEcoWatt:
			wantEcoWatt++
		}
	}
	if total != len(active) || native != wantNative || ecowatt != wantEcoWatt {
		t.Fatalf("kept counts of active sessions: %d (%d native, %d EcoWatt); counted: %d (%d native, %d EcoWatt)",
			total, native, ecowatt, len(active), wantNative, wantEcoWatt)
	}
	return total
}

// testSessionCounts takes sessions through every change that starts or
// ends them, checking the kept counts after each, and then that the caps
// read them: an open at the cap is refused, one under it is not.
func testSessionCounts(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	if _, ok := s.(SessionCounter); !ok {
		t.Skip("the store counts its sessions at each open")
	}
	rel, other := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, other))
	addDevices(t, s, "d1", "d2", "d3", "d4", "d5", "d6", "d7")
	open := func(id, dev, api string, rel *fota.Release, rollout int64) {
		t.Helper()
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: api,
			TotalChunks: 3, RolloutID: rollout}, fota.SessionCaps{}))
	}
	want := func(step string, total int) {
		t.Helper()
		if got := CheckSessionCounts(t, s); got != total {
			t.Fatalf("after %s: %d sessions active, want %d", step, got, total)
		}
	}
	want("nothing", 0)
	open("s1", "d1", fota.APINative, rel, 0)
	open("s2", "d2", fota.APIEcoWatt, rel, 0)
	open("s3", "d3", fota.APIEcoWatt, rel, 0)
	want("opens on both APIs", 3)
	open("s4", "d2", fota.APINative, rel, 0)
	want("a native session replacing an EcoWatt one", 3)
	must(t, s.SetSessionState(ctx, "s4", fota.StateChange{State: fota.SessionDownloaded}))
	must(t, s.SetSessionState(ctx, "s4", fota.StateChange{State: fota.SessionApplied}))
	must(t, s.SetSessionState(ctx, "s4", fota.StateChange{State: fota.SessionApplied}))
	want("steps between active states", 3)
	must(t, s.SetSessionState(ctx, "s4", fota.StateChange{State: fota.SessionConfirmed}))
	must(t, s.SetSessionState(ctx, "s3", fota.StateChange{State: fota.SessionFailed, Reason: "flash"}))
	want("outcomes", 1)
	wantCode(t, s.SetSessionState(ctx, "s3", fota.StateChange{State: fota.SessionConfirmed}), fota.EGONE)
	want("a late outcome", 1)

	// s1 goes idle and is swept by the next open.
	c.Advance(25 * time.Hour)
	open("s5", "d3", fota.APIEcoWatt, rel, 0)
	if got, _ := s.Session(ctx, "s1"); got.State != fota.SessionAbandoned {
		t.Fatalf("idle session is %s", got.State)
	}
	want("an idle sweep", 1)

	open("s6", "d4", fota.APINative, rel, 0)
	_, err := s.RemoveDevice(ctx, "d4")
	must(t, err)
	want("a device's removal", 1)

	r := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d5", "d6"), false)
	open("s7", "d5", fota.APINative, rel, r.ID)
	open("s8", "d6", fota.APIEcoWatt, rel, r.ID)
	want("a rollout's opens", 3)
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 1, State: fota.RolloutHalted, Wave: 1,
		Reason: "gate", Event: fota.EventRolloutHalted, EndSessions: true})
	must(t, err)
	want("a rollout's halt", 1)

	open("s9", "d7", fota.APINative, other, 0)
	want("an open of another release", 2)
	_, err = s.WithdrawRelease(ctx, other.ID, "bad")
	must(t, err)
	want("a withdrawal", 1)
	must(t, s.DeleteRelease(ctx, other.ID))
	want("a deletion of a release", 1)

	c.Advance(time.Hour)
	_, err = s.PruneSessions(ctx, c.Now(), 0, 100)
	must(t, err)
	_, err = s.PruneRemovedDevices(ctx, c.Now(), 100)
	must(t, err)
	if _, err := s.Session(ctx, "s6"); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("the removed device's session was not pruned: %v", err)
	}
	want("pruning", 1)

	// The caps read the counts: s5 (EcoWatt) is the one active session.
	c.Advance(time.Minute)
	caps := func(total, onAPI int) fota.SessionCaps { return fota.SessionCaps{Total: total, OnAPI: onAPI} }
	try := func(api string, caps fota.SessionCaps) error {
		return s.OpenSession(ctx, &fota.Session{ID: "try-" + api, DeviceID: "d1", ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: api,
			TotalChunks: 3}, caps)
	}
	wantCode(t, try(fota.APINative, caps(1, 0)), fota.EUNAVAILABLE)
	wantCode(t, try(fota.APIEcoWatt, caps(0, 1)), fota.EUNAVAILABLE)
	must(t, try(fota.APINative, caps(2, 1)))
	want("opens under the caps", 2)
}

// testConcurrentOpens has devices replace their sessions concurrently, as
// a rollout wave's devices retrying do: each open ends one session and
// starts another, and none may fail (a deadlock, say, between two opens'
// changes to the kept counts) or leave the counts off.
func testConcurrentOpens(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, rel))
	const devices, opens = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, devices*opens)
	for d := range devices {
		dev := fmt.Sprintf("d%d", d)
		must(t, s.CreateDevice(ctx, NewDevice(dev)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range opens {
				api := fota.APINative
				if (d+i)%3 == 0 {
					api = fota.APIEcoWatt
				}
				err := s.OpenSession(ctx, &fota.Session{ID: fmt.Sprintf("%s-%d", dev, i), DeviceID: dev, ReleaseID: rel.ID,
					ReleaseVersion: rel.Version, API: api, TotalChunks: 3}, fota.SessionCaps{Total: 1000, OnAPI: 1000})
				if err != nil && fota.ErrorCode(err) != fota.ECONFLICT { // EcoWatt does not replace native
					errs <- fmt.Errorf("open %s-%d: %w", dev, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := CheckSessionCounts(t, s); got >= 0 && got != devices {
		t.Fatalf("%d sessions active, want one a device (%d)", got, devices)
	}
}

// CheckCountsAfterUpgrade checks a store opened on a database whose
// sessions predate the kept counts: devices d0 to d7 and sessions s-d0 to
// s-d7, of which five active (two native, three EcoWatt). The counts must
// be right from the start, the caps must read them, and direct changes
// (exec runs SQL with the store's placeholders, $1 or ?) must keep them:
// a session's API changed, one brought back, three deleted.
func CheckCountsAfterUpgrade(t *testing.T, s fota.Store, exec func(query string, args ...any)) {
	t.Helper()
	ctx := context.Background()
	total, native, ecowatt, err := s.(SessionCounter).ActiveSessionCounts(ctx)
	if err != nil || total != 5 || native != 2 || ecowatt != 3 {
		t.Fatalf("counts after the upgrade: %d (%d native, %d EcoWatt), %v; want 5 (2, 3)", total, native, ecowatt, err)
	}
	CheckSessionCounts(t, s)
	caps := fota.SessionCaps{Total: 6, OnAPI: 3}
	open := func(id, dev string) error {
		return s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: 1, ReleaseVersion: "1.0.4", API: fota.APIEcoWatt, TotalChunks: 3}, caps)
	}
	if err := open("new", "d7"); fota.ErrorCode(err) != fota.EUNAVAILABLE {
		t.Fatalf("a fourth EcoWatt session under OnAPI 3: %v", err)
	}
	if err := open("replacement", "d5"); err != nil {
		t.Fatalf("a device replacing its EcoWatt session: %v", err)
	}
	exec(`UPDATE sessions SET api = ?1 WHERE id = 's-d0'`, fota.APIEcoWatt)
	CheckSessionCounts(t, s)
	exec(`UPDATE sessions SET api = ?1, state = ?2 WHERE id = 's-d2'`, fota.APIEcoWatt, fota.SessionOpen)
	CheckSessionCounts(t, s)
	exec(`DELETE FROM sessions WHERE id IN ('s-d1', 's-d3', 's-d6')`)
	if total := CheckSessionCounts(t, s); total != 4 {
		t.Fatalf("%d active after direct changes, want 4", total)
	}
}
