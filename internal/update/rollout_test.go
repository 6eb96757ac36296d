package update_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/pgtest"
	"github.com/ecowatt/fota/internal/postgres"
	"github.com/ecowatt/fota/internal/storetest"
	"github.com/ecowatt/fota/internal/update"
)

// publish stores a release that no rollout offers yet.
func (h *harness) publish(version string) *fota.Release {
	h.t.Helper()
	r := storetest.NewRelease("esp32", version)
	if err := h.store.CreateRelease(h.ctx, r); err != nil {
		h.t.Fatal(err)
	}
	return r
}

// fleet registers n native devices d001... with labels from label(i).
func (h *harness) fleet(n int, label func(i int) map[string]string) []string {
	h.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%03d", i+1)
		d := storetest.NewDevice(ids[i])
		if label != nil {
			d.Labels = label(i)
		}
		if err := h.store.CreateDevice(h.ctx, d); err != nil {
			h.t.Fatal(err)
		}
	}
	return ids
}

func (h *harness) rollout(spec update.RolloutSpec) *fota.Rollout {
	h.t.Helper()
	if spec.MinOutcomes == 0 {
		spec.MinOutcomes = -1
	}
	r, _, err := h.svc.CreateRollout(h.ctx, spec)
	if err != nil {
		h.t.Fatalf("create rollout: %v", err)
	}
	return r
}

func (h *harness) tick() {
	h.t.Helper()
	if err := h.svc.TickRollouts(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) view(id int64) *update.RolloutView {
	h.t.Helper()
	v, err := h.svc.Rollout(h.ctx, id, true)
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

// waveOf maps device ids to their wave in a rollout.
func (h *harness) waveOf(id int64) map[string]int {
	h.t.Helper()
	out := map[string]int{}
	for _, m := range h.view(id).Members {
		out[m.DeviceID] = m.Wave
	}
	return out
}

// outcome takes a device through a native session to state.
func (h *harness) outcome(id, state string) {
	h.t.Helper()
	offer, why := h.check(id, fota.APINative, "1.0.3")
	if offer == nil {
		h.t.Fatalf("%s is offered nothing: %s", id, why)
	}
	if err := h.report(offer.Session, fota.APINative, state); err != nil {
		h.t.Fatalf("%s reports %s: %v", id, state, err)
	}
}

func TestRolloutWavesOpenOnConfirmedBootsOnly(t *testing.T) {
	h := newHarness(t, update.Config{})
	rel := h.publish("1.0.4")
	ids := h.fleet(20, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.4", Waves: "2,10,all", Soak: time.Hour, MinOutcomes: 2, SilentTimeout: 3 * time.Hour})
	if r.State != fota.RolloutRunning || r.Wave != 1 || fmt.Sprint(r.WaveEnds) != "[2 10 20]" {
		t.Fatalf("created %s wave %d ends %v", r.State, r.Wave, r.WaveEnds)
	}
	waves := h.waveOf(r.ID)
	var first, later []string
	for _, id := range ids {
		if waves[id] == 1 {
			first = append(first, id)
		} else {
			later = append(later, id)
		}
	}
	if len(first) != 2 {
		t.Fatalf("wave 1 has %v", first)
	}
	for _, id := range later {
		h.wantNoOffer(id, fota.APINative, "1.0.3", "opens after wave 1 passes")
	}
	for _, id := range first {
		offer := h.wantOffer(id, fota.APINative, "1.0.3", "1.0.4")
		h.served(offer.Session, rel)
		// Downloaded, verified, applied: none of it is a success yet.
		for _, st := range []string{fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied} {
			if err := h.report(offer.Session, fota.APINative, st); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.clock.Advance(2 * time.Hour)
	h.tick()
	if v := h.view(r.ID); v.Rollout.Wave != 1 || v.Verdict.Action != update.GateHold {
		t.Fatalf("downloads alone opened wave %d (%+v)", v.Rollout.Wave, v.Verdict)
	}
	for _, id := range first {
		offer := h.wantOffer(id, fota.APINative, "1.0.3", "1.0.4")
		if err := h.report(offer.Session, fota.APINative, fota.SessionConfirmed); err != nil {
			t.Fatal(err)
		}
	}
	h.tick()
	if v := h.view(r.ID); v.Rollout.Wave != 2 {
		t.Fatalf("two confirmations after the soak: wave %d, gate %+v", v.Rollout.Wave, v.Verdict)
	}
	// The soak restarts with the new wave.
	h.tick()
	if v := h.view(r.ID); v.Rollout.Wave != 2 {
		t.Fatalf("wave 3 opened without soaking: %+v", v.Verdict)
	}
	// Retries never reshuffle: the waves are what they were.
	if again := h.waveOf(r.ID); fmt.Sprint(again) != fmt.Sprint(waves) {
		t.Fatalf("waves changed: %v -> %v", waves, again)
	}
}

func TestRolloutHaltsOnFailuresAndStopsDownloads(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.5")
	ids := h.fleet(40, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", Waves: "10,100%", MaxFailures: "2", MinOutcomes: 3})
	waves := h.waveOf(r.ID)
	var first []string
	for _, id := range ids {
		if waves[id] == 1 {
			first = append(first, id)
		}
	}
	// Three canaries roll back; a fourth is downloading when the third
	// failure crosses the limit.
	downloading := h.wantOffer(first[3], fota.APINative, "1.0.3", "1.0.5")
	for _, id := range first[:3] {
		h.outcome(id, fota.SessionRolledBack)
	}
	v := h.view(r.ID)
	if v.Rollout.State != fota.RolloutHalted || !strings.Contains(v.Rollout.Reason, "3 devices in wave 1 failed or went silent, over the limit of 2") {
		t.Fatalf("after 3 rollbacks: %s (%s)", v.Rollout.State, v.Rollout.Reason)
	}
	sess, err := h.store.Session(h.ctx, downloading.Session.ID)
	if err != nil || sess.State != fota.SessionAbandoned || !strings.Contains(sess.Reason, "halted") {
		t.Fatalf("the download under way: %+v, %v", sess, err)
	}
	for _, id := range ids {
		if id != first[0] {
			h.wantNoOffer(id, fota.APINative, "1.0.3", "halted")
		}
	}
	// Late outcomes do not move a halted rollout.
	h.clock.Advance(2 * time.Hour)
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("a tick moved the halted rollout to %s", v.Rollout.State)
	}
	// An operator resumes after a look: the three failures are accepted,
	// and the next ones count from there.
	if _, err := h.svc.ResumeRollout(h.ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	h.wantOffer(first[3], fota.APINative, "1.0.3", "1.0.5")
	h.outcome(first[4], fota.SessionRolledBack)
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutRunning {
		t.Fatalf("one failure after the resume halted it again: %s", v.Rollout.Reason)
	}
	for _, id := range first[5:7] {
		h.outcome(id, fota.SessionFailed)
	}
	v = h.view(r.ID)
	if v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("three failures after the resume: %s %q", v.Rollout.State, v.Rollout.Reason)
	}
	if v.Tally[0].Accepted != 3 || v.Tally[0].Failed != 3 {
		t.Fatalf("after the second halt: %+v, want the first three accepted and three failed", v.Tally[0])
	}
}

func TestSilentDevicesCountAsFailures(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.5")
	ids := h.fleet(10, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", Waves: "4,all", MaxFailures: "1", SilentTimeout: 30 * time.Minute})
	var first []string
	for id, w := range h.waveOf(r.ID) {
		if w == 1 {
			first = append(first, id)
		}
	}
	_ = ids
	h.wantOffer(first[0], fota.APINative, "1.0.3", "1.0.5")
	h.wantOffer(first[1], fota.APINative, "1.0.3", "1.0.5")
	h.clock.Advance(20 * time.Minute)
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutRunning {
		t.Fatalf("before the silent timeout: %s", v.Rollout.State)
	}
	h.clock.Advance(20 * time.Minute)
	h.tick()
	v := h.view(r.ID)
	if v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("two devices silent past the timeout: %s (%+v)", v.Rollout.State, v.Tally)
	}
	silent := 0
	for _, m := range v.Members {
		if m.State == fota.MemberSilent {
			silent++
		}
	}
	if silent != 0 {
		// The halt ended their sessions: they are pending again, not silent.
		t.Fatalf("%d members still read silent after the halt ended their sessions", silent)
	}
}

func TestPinWinsOverRollout(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	h.publish("1.0.5")
	h.fleet(3, nil)
	h.rollout(update.RolloutSpec{Release: "1.0.5", MaxFailures: "none"})
	if err := h.svc.Pin(h.ctx, "d001", "1.0.4"); err != nil {
		t.Fatal(err)
	}
	h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.4")
	h.wantOffer("d002", fota.APINative, "1.0.3", "1.0.5")
}

func TestReleaseReachesDevicesOnlyThroughRolloutOrPin(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	h.fleet(2, nil)
	h.wantNoOffer("d001", fota.APINative, "1.0.3", "no rollout includes this device")
}

func TestOverlappingRolloutsNeedSupersede(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	h.publish("1.0.5")
	h.fleet(10, func(i int) map[string]string {
		if i < 3 {
			return map[string]string{"ring": "canary"}
		}
		return map[string]string{"ring": "main"}
	})
	old := h.rollout(update.RolloutSpec{Release: "1.0.4", Selector: "ring=canary"})
	_, _, err := h.svc.CreateRollout(h.ctx, update.RolloutSpec{Release: "1.0.5", MinOutcomes: -1})
	wantCode(t, err, fota.ECONFLICT)
	if msg := fota.ErrorMessage(err); !strings.Contains(msg, fmt.Sprint(old.ID)) || !strings.Contains(msg, "--supersede") {
		t.Fatalf("conflict does not name rollout %d and the way out: %s", old.ID, msg)
	}
	// Devices outside it are free to take.
	h.rollout(update.RolloutSpec{Release: "1.0.5", Selector: "ring=main"})
	newer := h.rollout(update.RolloutSpec{Release: "1.0.5", Selector: "ring=canary", Supersede: true})
	h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.5")
	if v := h.view(old.ID); v.Rollout.State != fota.RolloutAborted {
		t.Fatalf("the superseded rollout is %s", v.Rollout.State)
	}
	if v := h.view(newer.ID); len(v.Members) != 3 {
		t.Fatalf("the new rollout has %d members", len(v.Members))
	}
}

func TestDevicesRegisteredLaterJoin(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	r := h.rollout(update.RolloutSpec{Release: "1.0.4", Selector: "site=plant-3"})
	h.device("late", fota.APINative) // no labels: not taken
	h.wantNoOffer("late", fota.APINative, "1.0.3", "no rollout")
	if _, err := h.svc.SetLabels(h.ctx, "late", map[string]string{"site": "plant-3"}, nil); err != nil {
		t.Fatal(err)
	}
	h.wantOffer("late", fota.APINative, "1.0.3", "1.0.4")
	if v := h.view(r.ID); len(v.Members) != 1 || v.Members[0].Wave != 1 {
		t.Fatalf("members %+v", v.Members)
	}
}

func TestPauseLetsDownloadsFinish(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	h.fleet(2, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.4"})
	started := h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.4")
	if _, err := h.svc.PauseRollout(h.ctx, r.ID, "looking at a dashboard"); err != nil {
		t.Fatal(err)
	}
	if again := h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.4"); again.Session.ID != started.Session.ID {
		t.Fatal("the paused rollout opened a new session instead of resuming")
	}
	h.wantNoOffer("d002", fota.APINative, "1.0.3", "paused")
	if _, err := h.svc.AbortRollout(h.ctx, r.ID, ""); err != nil {
		t.Fatal(err)
	}
	h.wantNoOffer("d001", fota.APINative, "1.0.3", "aborted")
	_, err := h.svc.ResumeRollout(h.ctx, r.ID)
	wantCode(t, err, fota.ECONFLICT)
}

// An unauthenticated failure report counts for the gate only from a
// device that fetched every chunk: anyone who knows an EcoWatt device's id
// can send one.
func TestEcoWattFailureCountsOnlyWhenFullyServed(t *testing.T) {
	h := newHarness(t, update.Config{})
	rel := h.publish("1.0.5")
	h.device("e1", fota.APIEcoWatt)
	h.device("e2", fota.APIEcoWatt)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", MaxFailures: "0"})
	forged := h.wantOffer("e1", fota.APIEcoWatt, "1.0.3", "1.0.5")
	if err := h.report(forged.Session, fota.APIEcoWatt, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutRunning {
		t.Fatalf("a failure report before any chunk was served halted the rollout: %s", v.Rollout.Reason)
	}
	real := h.wantOffer("e2", fota.APIEcoWatt, "1.0.3", "1.0.5")
	h.served(real.Session, rel)
	if err := h.report(real.Session, fota.APIEcoWatt, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("a fully served device's failure: %s", v.Rollout.State)
	}
}

func TestMaintenanceWindows(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.publish("1.0.4")
	h.fleet(2, nil)
	// The clock starts 2026-12-01 12:00 UTC, a Tuesday.
	h.rollout(update.RolloutSpec{Release: "1.0.4", Windows: []string{"Mon-Fri 11:00-13:00 UTC"}})
	offer := h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.4")
	if !offer.InstallAfter.IsZero() || !offer.InstallUntil.Equal(time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)) {
		t.Fatalf("inside the window: install after %v until %v", offer.InstallAfter, offer.InstallUntil)
	}
	h.clock.Advance(2 * time.Hour) // 14:00: outside
	h.wantNoOffer("d002", fota.APINative, "1.0.3", "maintenance windows; the next opens at 2026-12-02T11:00:00Z")
	resumed := h.wantOffer("d001", fota.APINative, "1.0.3", "1.0.4")
	if resumed.Session.ID != offer.Session.ID || !resumed.InstallAfter.Equal(time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("the download under way: session %s, install after %v", resumed.Session.ID, resumed.InstallAfter)
	}
}

// Replicas tick the same rollouts: each wave opens once.
func TestReplicasOpenEachWaveOnce(t *testing.T) {
	h := newHarness(t, update.Config{})
	raceReplicas(t, []fota.Store{h.store, h.store, h.store}, h.clock, 1)
}

// The same with two replicas on PostgreSQL, each with its own pool.
func TestReplicasOpenEachWaveOncePostgres(t *testing.T) {
	dsn := pgtest.Schema(t, "fota_rollout_")
	clock := storetest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	var stores []fota.Store
	for range 2 {
		s, err := postgres.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		s.SetClock(clock.Now)
		stores = append(stores, s)
	}
	raceReplicas(t, stores, clock, 4)
}

// raceReplicas runs a rollout whose first wave passed, then has a
// service per store tick it at once, ticks times each: wave 2 must open
// exactly once. (SQLite serves one replica; there three services on one
// file stand for a server's tick racing its request handlers.) Then three canaries of a second rollout fail at once on
// different replicas: it halts exactly once.
func raceReplicas(t *testing.T, stores []fota.Store, clock *storetest.Clock, ticks int) {
	ctx := context.Background()
	var svcs []*update.Service
	for _, st := range stores {
		svcs = append(svcs, update.New(update.Config{Store: st, Now: clock.Now}))
	}
	for _, v := range []string{"1.0.4", "1.0.5"} {
		if err := stores[0].CreateRelease(ctx, storetest.NewRelease("esp32", v)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if err := stores[0].CreateDevice(ctx, storetest.NewDevice(fmt.Sprintf("d%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	r, _, err := svcs[0].CreateRollout(ctx, update.RolloutSpec{Release: "1.0.4", Waves: "5,all", Soak: time.Minute, MinOutcomes: -1})
	if err != nil {
		t.Fatal(err)
	}
	members := func(id int64) []*fota.RolloutMember {
		v, err := svcs[0].Rollout(ctx, id, true)
		if err != nil {
			t.Fatal(err)
		}
		return v.Members
	}
	outcome := func(svc *update.Service, id, running, state string) error {
		offer, why, err := svc.Check(ctx, update.CheckIn{DeviceID: id, API: fota.APINative, Running: running})
		if err != nil || offer == nil {
			return fmt.Errorf("%s: %v %s", id, err, why)
		}
		return svc.Report(ctx, update.Report{Session: offer.Session, API: fota.APINative, State: state, Reason: "test"})
	}
	for _, m := range members(r.ID) {
		if m.Wave == 1 {
			if err := outcome(svcs[0], m.DeviceID, "1.0.3", fota.SessionConfirmed); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock.Advance(2 * time.Minute)
	var wg sync.WaitGroup
	for _, svc := range svcs {
		for range ticks {
			wg.Go(func() {
				if err := svc.TickRollouts(ctx); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if got := countEvents(t, stores[0], r.ID, fota.EventRolloutWaveOpened); got != 1 {
		t.Fatalf("%d wave-opened events; want 1", got)
	}
	// A second rollout, every device, a canary wave of three that all fail
	// on different replicas at once.
	r2, _, err := svcs[0].CreateRollout(ctx, update.RolloutSpec{Release: "1.0.5", Waves: "3,all", MaxFailures: "0", MinOutcomes: -1, Supersede: true})
	if err != nil {
		t.Fatal(err)
	}
	var canaries []string
	for _, m := range members(r2.ID) {
		if m.Wave == 1 {
			canaries = append(canaries, m.DeviceID)
		}
	}
	offers := make([]*update.Offer, len(canaries))
	for i, id := range canaries {
		running := "1.0.3"
		if d, _ := stores[0].Device(ctx, id); d.Version != "" {
			running = d.Version
		}
		offer, why, err := svcs[i%len(svcs)].Check(ctx, update.CheckIn{DeviceID: id, API: fota.APINative, Running: running})
		if err != nil || offer == nil {
			t.Fatalf("%s: %v %s", id, err, why)
		}
		offers[i] = offer
		// Installed and rebooting: a halt no longer stops them.
		if err := svcs[0].Report(ctx, update.Report{Session: offer.Session, API: fota.APINative, State: fota.SessionApplied}); err != nil {
			t.Fatal(err)
		}
	}
	for i, offer := range offers {
		wg.Go(func() {
			svc := svcs[i%len(svcs)]
			if err := svc.Report(ctx, update.Report{Session: offer.Session, API: fota.APINative, State: fota.SessionRolledBack, Reason: "test"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	v, err := svcs[1%len(svcs)].Rollout(ctx, r2.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := countEvents(t, stores[0], r2.ID, fota.EventRolloutHalted); got != 1 || v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("rollout %s with %d halted events; want halted once", v.Rollout.State, got)
	}
}

func countEvents(t *testing.T, s fota.Store, rollout int64, kind string) int {
	t.Helper()
	evs, err := s.Events(context.Background(), fota.EventFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Kind == kind && e.RolloutID == rollout {
			n++
		}
	}
	return n
}

// In a rollout with devices that can authenticate, what arrives on the
// EcoWatt API decides nothing for them: it cannot halt, pass or mark them.
func TestUnauthenticatedOutcomesDoNotGateNativeDevices(t *testing.T) {
	h := newHarness(t, update.Config{})
	rel := h.publish("1.0.5")
	h.device("nat", fota.APINative)
	h.device("both", fota.APIBoth)
	h.device("eco", fota.APIEcoWatt)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", MaxFailures: "0", SilentTimeout: 10 * time.Minute})
	// An EcoWatt-only device that fetched everything and reports a failure.
	eco := h.wantOffer("eco", fota.APIEcoWatt, "1.0.3", "1.0.5")
	h.served(eco.Session, rel)
	if err := h.report(eco.Session, fota.APIEcoWatt, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	// A device allowed both APIs confirms natively; then a forged EcoWatt
	// session claims it runs the old version and failed.
	native := h.wantOffer("both", fota.APINative, "1.0.3", "1.0.5")
	if err := h.report(native.Session, fota.APINative, fota.SessionConfirmed); err != nil {
		t.Fatal(err)
	}
	forged := h.wantOffer("both", fota.APIEcoWatt, "1.0.3", "1.0.5")
	h.served(forged.Session, rel)
	if err := h.report(forged.Session, fota.APIEcoWatt, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	// And a forged check-in that opens a session it never uses.
	h.wantOffer("nat", fota.APINative, "1.0.3", "1.0.5")
	h.clock.Advance(5 * time.Minute)
	h.tick()
	v := h.view(r.ID)
	states := map[string]string{}
	for _, m := range v.Members {
		states[m.DeviceID] = m.State
	}
	if v.Rollout.State != fota.RolloutRunning || states["both"] != fota.MemberConfirmed || states["eco"] != fota.MemberFailed {
		t.Fatalf("after unauthenticated failures: %s (%s), members %v", v.Rollout.State, v.Rollout.Reason, states)
	}
	// The native device goes silent: that counts.
	h.clock.Advance(10 * time.Minute)
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("a native device silent past the timeout: %s", v.Rollout.State)
	}
}

// A session opened by one unauthenticated check-in never reads silent:
// only one that fetched every chunk and then said nothing.
func TestOneForgedCheckInIsNotSilence(t *testing.T) {
	h := newHarness(t, update.Config{})
	rel := h.publish("1.0.5")
	h.device("e1", fota.APIEcoWatt)
	h.device("e2", fota.APIEcoWatt)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", MaxFailures: "0", SilentTimeout: 10 * time.Minute})
	h.wantOffer("e1", fota.APIEcoWatt, "1.0.3", "1.0.5")
	h.clock.Advance(time.Hour)
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutRunning {
		t.Fatalf("one check-in an hour ago: %s (%s)", v.Rollout.State, v.Rollout.Reason)
	}
	all := h.wantOffer("e2", fota.APIEcoWatt, "1.0.3", "1.0.5")
	h.served(all.Session, rel)
	h.clock.Advance(time.Hour)
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("served every chunk, then silent for an hour: %s", v.Rollout.State)
	}
}

// A device moved from the EcoWatt API to both keeps what a forged
// EcoWatt-API session made of its membership, but that outcome decides
// nothing now that the rollout holds a device that can authenticate.
func TestPolicyWideningDoesNotTrustForgedOutcomes(t *testing.T) {
	h := newHarness(t, update.Config{})
	rel := h.publish("1.0.5")
	h.device("m1", fota.APIEcoWatt)
	h.device("n1", fota.APINative)
	r := h.rollout(update.RolloutSpec{Release: "1.0.5", MaxFailures: "0"})
	forged := h.wantOffer("m1", fota.APIEcoWatt, "1.0.3", "1.0.5")
	if err := h.svc.SetAPIPolicy(h.ctx, "m1", fota.APIBoth); err != nil {
		t.Fatal(err)
	}
	h.served(forged.Session, rel)
	if err := h.report(forged.Session, fota.APIEcoWatt, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	h.tick()
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutRunning {
		t.Fatalf("a failure from an EcoWatt-API session of a device now allowed both: %s (%s)", v.Rollout.State, v.Rollout.Reason)
	}
	h.outcome("n1", fota.SessionRolledBack)
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("the native device's rollback: %s", v.Rollout.State)
	}
}
