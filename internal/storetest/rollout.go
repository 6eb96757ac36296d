package storetest

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
)

// newRollout returns a rollout of rel in three waves (1, 2 and 3 devices
// cumulative), in state at wave.
func newRollout(rel *fota.Release, state string, wave int) *fota.Rollout {
	return &fota.Rollout{ReleaseID: rel.ID, Waves: "1,2,all", WaveEnds: []int{1, 2, 3}, Soak: time.Hour,
		MaxFailuresPercent: -1, MaxFailures: 1, MinOutcomes: 1, SilentTimeout: 2 * time.Hour, State: state, Wave: wave}
}

// inWave returns members for the devices ids, all in wave.
func inWave(wave int, ids ...string) []*fota.RolloutMember {
	var ms []*fota.RolloutMember
	for _, id := range ids {
		ms = append(ms, &fota.RolloutMember{DeviceID: id, Wave: wave})
	}
	return ms
}

// addDevices registers esp32 devices.
func addDevices(t *testing.T, s fota.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		must(t, s.CreateDevice(context.Background(), NewDevice(id)))
	}
}

// createRollout stores r with members, failing the test on an error.
func createRollout(t *testing.T, s fota.Store, r *fota.Rollout, members []*fota.RolloutMember, supersede bool) *fota.Rollout {
	t.Helper()
	must(t, s.CreateRollout(context.Background(), r, members, supersede))
	return r
}

// openFor opens session id on device dev for release rel and rollout.
func openFor(s fota.Store, id, dev string, rel *fota.Release, rollout int64) error {
	return s.OpenSession(context.Background(), &fota.Session{ID: id, DeviceID: dev, ReleaseID: rel.ID, ReleaseVersion: rel.Version,
		API: fota.APINative, TotalChunks: 4, RolloutID: rollout}, fota.SessionCaps{})
}

// memberStates reads a rollout's members as "device:state", in the
// store's order.
func memberStates(t *testing.T, s fota.Store, id int64, silentBefore time.Time) string {
	t.Helper()
	ms, err := s.RolloutMembers(context.Background(), id, silentBefore)
	must(t, err)
	var out []string
	for _, m := range ms {
		out = append(out, m.DeviceID+":"+m.State)
	}
	return strings.Join(out, " ")
}

// member reads one member of a rollout.
func member(t *testing.T, s fota.Store, id int64, dev string) *fota.RolloutMember {
	t.Helper()
	ms, err := s.RolloutMembers(context.Background(), id, time.Time{})
	must(t, err)
	for _, m := range ms {
		if m.DeviceID == dev {
			return m
		}
	}
	t.Fatalf("device %s is not a member of rollout %d", dev, id)
	return nil
}

// eventsOf lists the events of kind, newest first.
func eventsOf(t *testing.T, s fota.Store, kind string) []*fota.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), fota.EventFilter{Limit: 1000})
	must(t, err)
	var out []*fota.Event
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func testLabels(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	d := NewDevice("d1")
	d.Labels = map[string]string{"ring": "canary", "site": "north-3"}
	must(t, s.CreateDevice(ctx, d))
	addDevices(t, s, "d2")
	got, err := s.Device(ctx, "d1")
	must(t, err)
	if !maps.Equal(got.Labels, d.Labels) {
		t.Fatalf("labels read back %v, want %v", got.Labels, d.Labels)
	}
	if added := eventsOf(t, s, fota.EventDeviceAdded); !strings.Contains(added[1].Detail, "labels ring=canary,site=north-3") {
		t.Fatalf("device-added event %q does not name the labels", added[1].Detail)
	}
	list, err := s.Devices(ctx)
	must(t, err)
	if len(list) != 2 || list[1].Labels == nil || len(list[1].Labels) != 0 || list[0].Labels["ring"] != "canary" {
		t.Fatalf("listed labels: %v and %v; want d1's, and an empty map for d2", list[0].Labels, list[1].Labels)
	}

	// Invalid labels store no device.
	tooMany := map[string]string{}
	for i := range fota.MaxLabels + 1 {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}
	for name, labels := range map[string]map[string]string{
		"upper-case key": {"Ring": "canary"}, "space in value": {"ring": "a b"}, "empty key": {"": "x"}, "too many": tooMany,
	} {
		bad := NewDevice("bad")
		bad.Labels = labels
		if err := s.CreateDevice(ctx, bad); fota.ErrorCode(err) != fota.EINVALID {
			t.Fatalf("%s: CreateDevice: %v, want %s", name, err, fota.EINVALID)
		}
	}
	_, err = s.Device(ctx, "bad")
	wantCode(t, err, fota.ENOTFOUND)

	c.Advance(time.Minute)
	ctx = fota.WithActor(ctx, "token:ops")
	changed, err := s.SetDeviceLabels(ctx, "d1", map[string]string{"ring": "beta", "floor": "2"}, []string{"site", "absent"})
	must(t, err)
	want := map[string]string{"ring": "beta", "floor": "2"}
	if !maps.Equal(changed.Labels, want) || changed.ID != "d1" || changed.Hardware != "esp32" {
		t.Fatalf("SetDeviceLabels returned %+v, want labels %v", changed, want)
	}
	if got, _ := s.Device(ctx, "d1"); !maps.Equal(got.Labels, want) {
		t.Fatalf("labels after a change: %v, want %v", got.Labels, want)
	}
	evs, _ := s.Events(ctx, fota.EventFilter{DeviceID: "d1", Limit: 1})
	if e := evs[0]; e.Kind != fota.EventLabels || e.Detail != "set floor=2,ring=beta; removed site" || e.Actor != "token:ops" ||
		!e.Time.Equal(c.Now()) {
		t.Fatalf("labels event %+v", e)
	}

	// Refusals change nothing.
	_, err = s.SetDeviceLabels(ctx, "d1", map[string]string{"ring": "has space"}, nil)
	wantCode(t, err, fota.EINVALID)
	_, err = s.SetDeviceLabels(ctx, "d1", map[string]string{"ring": "x"}, []string{"ring"})
	wantCode(t, err, fota.EINVALID)
	_, err = s.SetDeviceLabels(ctx, "d1", tooMany, nil)
	wantCode(t, err, fota.EINVALID)
	if got, _ := s.Device(ctx, "d1"); !maps.Equal(got.Labels, want) {
		t.Fatalf("labels after refused changes: %v, want %v", got.Labels, want)
	}
	_, err = s.SetDeviceLabels(ctx, "nobody", map[string]string{"ring": "x"}, nil)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.RemoveDevice(ctx, "d2")
	must(t, err)
	_, err = s.SetDeviceLabels(ctx, "d2", map[string]string{"ring": "x"}, nil)
	wantCode(t, err, fota.ENOTFOUND)

	// Removing every label leaves an empty map.
	cleared, err := s.SetDeviceLabels(ctx, "d1", nil, []string{"ring", "floor"})
	must(t, err)
	if got, _ := s.Device(ctx, "d1"); got.Labels == nil || len(got.Labels) != 0 || len(cleared.Labels) != 0 {
		t.Fatalf("labels after removing them all: %v", got.Labels)
	}
}

func testInventory(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	addDevices(t, s, "d1", "gone")
	if d, _ := s.Device(ctx, "d1"); d.Inventory != (fota.Inventory{}) {
		t.Fatalf("a new device has inventory %+v", d.Inventory)
	}
	first := c.Now()
	inv := fota.Inventory{Chip: "ESP32-S3", SlotSize: 1 << 21, FreeFlash: 123456, AgentVersion: "0.9.1"}
	must(t, s.SetInventory(ctx, "d1", inv))
	d, err := s.Device(ctx, "d1")
	must(t, err)
	inv.Updated = first
	if d.Inventory != inv {
		t.Fatalf("inventory read back %+v, want %+v", d.Inventory, inv)
	}
	// The same report again is no change: Updated stays.
	c.Advance(time.Hour)
	must(t, s.SetInventory(ctx, "d1", fota.Inventory{Chip: "ESP32-S3", SlotSize: 1 << 21, FreeFlash: 123456, AgentVersion: "0.9.1"}))
	if d, _ := s.Device(ctx, "d1"); !d.Inventory.Updated.Equal(first) {
		t.Fatalf("an unchanged report moved Updated to %v, want %v", d.Inventory.Updated, first)
	}
	must(t, s.SetInventory(ctx, "d1", fota.Inventory{Chip: "ESP32-S3", SlotSize: 1 << 21, FreeFlash: 99, AgentVersion: "0.9.1"}))
	list, _ := s.Devices(ctx)
	if got := list[0].Inventory; got.FreeFlash != 99 || !got.Updated.Equal(c.Now()) {
		t.Fatalf("inventory after a change: %+v, want free flash 99 updated %v", got, c.Now())
	}
	wantCode(t, s.SetInventory(ctx, "nobody", inv), fota.ENOTFOUND)
	_, err = s.RemoveDevice(ctx, "gone")
	must(t, err)
	wantCode(t, s.SetInventory(ctx, "gone", inv), fota.ENOTFOUND)
}

// sameRollout fails the test unless got reads back as want.
func sameRollout(t *testing.T, got, want *fota.Rollout) {
	t.Helper()
	g, w := *got, *want
	for _, p := range []struct{ g, w *time.Time }{{&g.Start, &w.Start}, {&g.WaveOpened, &w.WaveOpened}, {&g.Created, &w.Created}, {&g.Updated, &w.Updated}} {
		if !p.g.Equal(*p.w) {
			t.Fatalf("rollout %d read back with time %v, want %v", want.ID, *p.g, *p.w)
		}
		*p.g, *p.w = time.Time{}, time.Time{}
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("rollout read back\n%+v\nwant\n%+v", g, w)
	}
}

func testCreateRollout(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "token:ops")
	rel := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, rel))
	addDevices(t, s, "d1", "d2", "d3", "d4", "d5")
	s3 := NewDevice("s3")
	s3.Hardware = "esp32s3"
	must(t, s.CreateDevice(ctx, s3))

	c.Advance(time.Minute)
	r := &fota.Rollout{ReleaseID: rel.ID, Selector: "ring=canary", Waves: "1,50%,all", WaveEnds: []int{1, 2, 4}, Soak: 90 * time.Minute,
		MaxFailuresPercent: 12.5, MaxFailures: -1, MinOutcomes: 3, SilentTimeout: 2 * time.Hour, Windows: []string{"Mon-Fri 02:00-05:00"},
		Start: c.Now().Add(time.Hour), State: fota.RolloutRunning, Wave: 1, WaveOpened: c.Now(), GateBase: 2, Reason: "first"}
	members := append(append(inWave(1, "d1"), inWave(2, "d2")...), inWave(3, "d3", "d4")...)
	must(t, s.CreateRollout(ctx, r, members, false))
	if r.ID == 0 || !r.Created.Equal(c.Now()) || !r.Updated.Equal(c.Now()) || r.Hardware != "esp32" || r.ReleaseVersion != "1.0.4" {
		t.Fatalf("CreateRollout set %+v", r)
	}
	got, err := s.Rollout(ctx, r.ID)
	must(t, err)
	sameRollout(t, got, r)

	// A list of devices and no windows read back as given, nil for none.
	c.Advance(time.Minute)
	listed := newRollout(rel, fota.RolloutScheduled, 0)
	listed.DeviceIDs = []string{"d5"}
	createRollout(t, s, listed, inWave(1, "d5"), false)
	got, err = s.Rollout(ctx, listed.ID)
	must(t, err)
	sameRollout(t, got, listed)
	if got.Windows != nil || r.DeviceIDs != nil {
		t.Fatalf("no windows read back as %#v", got.Windows)
	}
	all, err := s.Rollouts(ctx)
	must(t, err)
	if len(all) != 2 || all[0].ID != listed.ID || all[1].ID != r.ID {
		t.Fatalf("rollouts: %d, want the newest (%d) first", len(all), listed.ID)
	}

	gotR, m, err := s.DeviceRollout(ctx, "d2")
	must(t, err)
	sameRollout(t, gotR, r)
	if m.RolloutID != r.ID || m.DeviceID != "d2" || m.Wave != 2 || m.State != fota.MemberPending || m.SessionID != "" ||
		!m.Offered.IsZero() || !m.Updated.Equal(r.Created) {
		t.Fatalf("membership %+v", m)
	}
	_, _, err = s.DeviceRollout(ctx, "s3")
	wantCode(t, err, fota.ENOTFOUND)
	if got := memberStates(t, s, r.ID, time.Time{}); got != "d1:pending d2:pending d3:pending d4:pending" {
		t.Fatalf("members %s", got)
	}
	created := eventsOf(t, s, fota.EventRolloutCreated)
	if len(created) != 2 || created[1].RolloutID != r.ID || created[1].ReleaseVersion != "1.0.4" || created[1].Actor != "token:ops" ||
		!strings.Contains(created[1].Detail, "4 esp32 device(s)") {
		t.Fatalf("created events %+v", created)
	}

	// Refused: nothing stored.
	for name, tc := range map[string]struct {
		r       *fota.Rollout
		members []*fota.RolloutMember
		code    string
	}{
		"unknown release":      {&fota.Rollout{ReleaseID: 999, WaveEnds: []int{1}, State: fota.RolloutRunning}, inWave(1, "d5"), fota.ENOTFOUND},
		"other hardware":       {newRollout(rel, fota.RolloutRunning, 1), inWave(1, "s3"), fota.EINVALID},
		"unknown device":       {newRollout(rel, fota.RolloutRunning, 1), inWave(1, "nobody"), fota.EINVALID},
		"device twice":         {newRollout(rel, fota.RolloutRunning, 1), inWave(1, "s3", "s3"), fota.EINVALID},
		"wave past the last":   {newRollout(rel, fota.RolloutRunning, 1), inWave(4, "d5"), fota.EINVALID},
		"unknown state":        {newRollout(rel, "exploded", 1), inWave(1, "d5"), fota.EINVALID},
		"read-only member":     {newRollout(rel, fota.RolloutRunning, 1), []*fota.RolloutMember{{DeviceID: "d5", Wave: 1, State: fota.MemberSilent}}, fota.EINVALID},
		"release for esp32s3?": {&fota.Rollout{ReleaseID: rel.ID, Hardware: "esp32s3", WaveEnds: []int{1}, State: fota.RolloutRunning}, inWave(1, "s3"), fota.EINVALID},
	} {
		if err := s.CreateRollout(ctx, tc.r, tc.members, true); fota.ErrorCode(err) != tc.code {
			t.Fatalf("%s: %v, want %s", name, err, tc.code)
		}
	}
	if all, _ := s.Rollouts(ctx); len(all) != 2 {
		t.Fatalf("%d rollouts after refused ones, want 2", len(all))
	}
	if _, m, _ := s.DeviceRollout(ctx, "d5"); m.RolloutID != listed.ID {
		t.Fatalf("a refused rollout took d5 from rollout %d: %+v", listed.ID, m)
	}

	// A withdrawn release is not rolled out.
	_, err = s.WithdrawRelease(ctx, rel.ID, "")
	must(t, err)
	wantCode(t, s.CreateRollout(ctx, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d5"), true), fota.EGONE)
}

func testRolloutOverlap(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r1, r2, r3 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5"), NewRelease("esp32", "1.0.6")
	for _, r := range []*fota.Release{r1, r2, r3} {
		must(t, s.CreateRelease(ctx, r))
	}
	addDevices(t, s, "d1", "d2", "d3", "d4")
	a := createRollout(t, s, newRollout(r1, fota.RolloutRunning, 1), inWave(1, "d1", "d2", "d3"), false)

	err := s.CreateRollout(ctx, newRollout(r2, fota.RolloutRunning, 1), inWave(1, "d2", "d3", "d4"), false)
	wantCode(t, err, fota.ECONFLICT)
	msg := fota.ErrorMessage(err)
	for _, want := range []string{fmt.Sprintf("rollout %d ", a.ID), "1.0.4", "holds 2 ", "--supersede"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("overlap error %q does not say %q", msg, want)
		}
	}
	if all, _ := s.Rollouts(ctx); len(all) != 1 {
		t.Fatalf("%d rollouts after a refused overlap, want 1", len(all))
	}
	_, _, err = s.DeviceRollout(ctx, "d4")
	wantCode(t, err, fota.ENOTFOUND)

	c.Advance(time.Minute)
	b := createRollout(t, s, newRollout(r2, fota.RolloutRunning, 1), inWave(1, "d2", "d3", "d4"), true)
	if got := memberStates(t, s, a.ID, time.Time{}); got != "d1:pending d2:superseded d3:superseded" {
		t.Fatalf("rollout %d after a partial supersede: %s", a.ID, got)
	}
	if got, _ := s.Rollout(ctx, a.ID); got.State != fota.RolloutRunning {
		t.Fatalf("rollout %d with a device left is %s", a.ID, got.State)
	}
	if _, m, _ := s.DeviceRollout(ctx, "d2"); m.RolloutID != b.ID {
		t.Fatalf("d2 is in rollout %d, want %d", m.RolloutID, b.ID)
	}
	if _, m, _ := s.DeviceRollout(ctx, "d1"); m.RolloutID != a.ID {
		t.Fatalf("d1 is in rollout %d, want %d", m.RolloutID, a.ID)
	}
	if created := eventsOf(t, s, fota.EventRolloutCreated); !strings.Contains(created[0].Detail, fmt.Sprintf("took over 2 device(s) from rollout %d", a.ID)) {
		t.Fatalf("created event %q does not say what it took over", created[0].Detail)
	}
	if evs := eventsOf(t, s, fota.EventRolloutSuperseded); len(evs) != 0 {
		t.Fatalf("a partly superseded rollout recorded %+v", evs)
	}

	// Two holders at once: both are named.
	err = s.CreateRollout(ctx, newRollout(r3, fota.RolloutRunning, 1), inWave(1, "d1", "d4"), false)
	wantCode(t, err, fota.ECONFLICT)
	if msg := fota.ErrorMessage(err); !strings.Contains(msg, fmt.Sprintf("rollout %d ", a.ID)) || !strings.Contains(msg, fmt.Sprintf("rollout %d ", b.ID)) {
		t.Fatalf("overlap error %q does not name rollouts %d and %d", msg, a.ID, b.ID)
	}

	// Taking a's last device ends it.
	c.Advance(time.Minute)
	cc := createRollout(t, s, newRollout(r3, fota.RolloutRunning, 1), inWave(1, "d1"), true)
	got, _ := s.Rollout(ctx, a.ID)
	if got.State != fota.RolloutAborted || !strings.Contains(got.Reason, fmt.Sprintf("superseded by rollout %d", cc.ID)) ||
		!got.Updated.Equal(c.Now()) {
		t.Fatalf("wholly superseded rollout: %s %q updated %v", got.State, got.Reason, got.Updated)
	}
	evs := eventsOf(t, s, fota.EventRolloutSuperseded)
	if len(evs) != 1 || evs[0].RolloutID != a.ID || evs[0].ReleaseVersion != "1.0.4" {
		t.Fatalf("superseded events %+v", evs)
	}
	if got, _ := s.Rollout(ctx, b.ID); got.State != fota.RolloutRunning {
		t.Fatalf("rollout %d, untouched, is %s", b.ID, got.State)
	}
	tally, err := s.RolloutTally(ctx, a.ID, time.Time{})
	must(t, err)
	if tally[0].Superseded != 3 || tally[0].Members != 3 {
		t.Fatalf("tally of a superseded rollout: %+v", tally[0])
	}
}

func testOverlapEndedRollouts(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r1, r2 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, r1))
	must(t, s.CreateRelease(ctx, r2))
	addDevices(t, s, "d1", "d2", "d3")
	done := createRollout(t, s, newRollout(r1, fota.RolloutCompleted, 3), inWave(1, "d1", "d3"), false)
	dropped := createRollout(t, s, newRollout(r1, fota.RolloutAborted, 1), inWave(1, "d2"), false)

	// Neither holds its devices: no --supersede needed, no events.
	b := createRollout(t, s, newRollout(r2, fota.RolloutRunning, 1), inWave(1, "d1", "d2"), false)
	if got := memberStates(t, s, done.ID, time.Time{}); got != "d1:superseded d3:pending" {
		t.Fatalf("completed rollout's members: %s", got)
	}
	if got := memberStates(t, s, dropped.ID, time.Time{}); got != "d2:superseded" {
		t.Fatalf("aborted rollout's members: %s", got)
	}
	if got, _ := s.Rollout(ctx, done.ID); got.State != fota.RolloutCompleted {
		t.Fatalf("completed rollout became %s", got.State)
	}
	if evs := eventsOf(t, s, fota.EventRolloutSuperseded); len(evs) != 0 {
		t.Fatalf("silent supersedes recorded %+v", evs)
	}
	if _, m, _ := s.DeviceRollout(ctx, "d1"); m.RolloutID != b.ID {
		t.Fatalf("d1 is in rollout %d, want %d", m.RolloutID, b.ID)
	}
	if _, m, _ := s.DeviceRollout(ctx, "d3"); m.RolloutID != done.ID {
		t.Fatalf("d3 is in rollout %d, want %d", m.RolloutID, done.ID)
	}
}

// testConcurrentOverlap: replicas creating overlapping rollouts at once
// cannot both succeed.
func testConcurrentOverlap(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	var rels []*fota.Release
	for i := range 12 {
		r := NewRelease("esp32", fmt.Sprintf("1.1.%d", i))
		must(t, s.CreateRelease(ctx, r))
		rels = append(rels, r)
	}
	// Each overlaps every other in one device; its own devices make each
	// transaction long enough for the others to check meanwhile. They are
	// registered concurrently, so that a store with a connection pool has
	// a connection ready for each racer.
	addDevices(t, s, "shared")
	own := make([][]string, len(rels))
	var setup sync.WaitGroup
	for i := range rels {
		for j := range 20 {
			own[i] = append(own[i], fmt.Sprintf("d%d-%d", i, j))
		}
		setup.Go(func() {
			for _, id := range own[i] {
				if err := s.CreateDevice(ctx, NewDevice(id)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	setup.Wait()
	if t.Failed() {
		return
	}
	var wg sync.WaitGroup
	errs := make([]error, len(rels))
	start := make(chan struct{})
	for i, rel := range rels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CreateRollout(ctx, newRollout(rel, fota.RolloutRunning, 1), inWave(1, append(own[i], "shared")...), false)
		}()
	}
	close(start) // all at once: each checks before the others commit
	wg.Wait()
	created := 0
	for _, err := range errs {
		switch fota.ErrorCode(err) {
		case "":
			created++
		case fota.ECONFLICT:
		default:
			t.Fatalf("CreateRollout: %v", err)
		}
	}
	if all, _ := s.Rollouts(ctx); created != 1 || len(all) != 1 {
		t.Fatalf("%d of %d overlapping rollouts created at once (%d stored), want 1", created, len(rels), len(all))
	}
}

func testRolloutOpenSession(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	rel, other := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, other))
	addDevices(t, s, "d1", "d2", "d3")
	r := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), append(inWave(1, "d1"), inWave(2, "d2")...), false)

	c.Advance(time.Minute)
	must(t, openFor(s, "s1", "d1", rel, r.ID))
	sess, err := s.Session(ctx, "s1")
	must(t, err)
	if sess.RolloutID != r.ID {
		t.Fatalf("session reads back with rollout %d, want %d", sess.RolloutID, r.ID)
	}
	if active, _ := s.ActiveSessions(ctx); len(active) != 1 || active[0].RolloutID != r.ID {
		t.Fatalf("active sessions %+v", active)
	}
	m := member(t, s, r.ID, "d1")
	if m.State != fota.MemberOffered || m.SessionID != "s1" || !m.Offered.Equal(c.Now()) || !m.Updated.Equal(c.Now()) {
		t.Fatalf("member after the open: %+v", m)
	}

	refused := func(id, dev string, rel *fota.Release, rollout int64, says string) {
		t.Helper()
		err := openFor(s, id, dev, rel, rollout)
		wantCode(t, err, fota.EGONE)
		if !strings.Contains(fota.ErrorMessage(err), says) {
			t.Fatalf("refused open: %q does not say %q", fota.ErrorMessage(err), says)
		}
		if _, err := s.Session(ctx, id); fota.ErrorCode(err) != fota.ENOTFOUND {
			t.Fatalf("refused session %s was stored: %v", id, err)
		}
	}
	refused("s2", "d2", rel, r.ID, fmt.Sprintf("device d2 is not in an open wave of rollout %d", r.ID))
	refused("s3", "d3", rel, r.ID, fmt.Sprintf("not in rollout %d", r.ID))
	refused("s4", "d1", rel, 999, "rollout 999")
	refused("s5", "d1", other, r.ID, "does not offer")
	if m := member(t, s, r.ID, "d2"); m.State != fota.MemberPending {
		t.Fatalf("refused member is %s", m.State)
	}

	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 1, State: fota.RolloutPaused, Wave: 1,
		Event: fota.EventRolloutPaused})
	must(t, err)
	refused("s6", "d1", rel, r.ID, fmt.Sprintf("rollout %d is paused", r.ID))
	// The refused open ended nothing.
	if sess, _ := s.Session(ctx, "s1"); sess.State != fota.SessionOpen {
		t.Fatalf("a refused open ended the device's session: %s", sess.State)
	}
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutPaused, FromWave: 1, State: fota.RolloutHalted, Wave: 1,
		Reason: "3 of 5 failed", Event: fota.EventRolloutHalted})
	must(t, err)
	refused("s7", "d1", rel, r.ID, fmt.Sprintf("rollout %d is halted: 3 of 5 failed", r.ID))

	// Resumed with wave 2 open, both open.
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutHalted, FromWave: 1, State: fota.RolloutRunning, Wave: 2,
		Event: fota.EventRolloutResumed})
	must(t, err)
	must(t, openFor(s, "s8", "d2", rel, r.ID))
	must(t, openFor(s, "s9", "d1", rel, r.ID))
	if m := member(t, s, r.ID, "d1"); m.State != fota.MemberOffered || m.SessionID != "s9" {
		t.Fatalf("member after a second open: %+v", m)
	}
	// A completed rollout still offers.
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 2, State: fota.RolloutCompleted, Wave: 2,
		Event: fota.EventRolloutCompleted})
	must(t, err)
	must(t, openFor(s, "s10", "d2", rel, r.ID))
	// A pin opens outside any rollout, whatever the device's rollout says.
	must(t, openFor(s, "pin", "d3", other, 0))
	if sess, _ := s.Session(ctx, "pin"); sess.RolloutID != 0 {
		t.Fatalf("a pinned session reads back with rollout %d", sess.RolloutID)
	}
}

func testMemberFollowsSession(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	rel, rel2 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, rel2))
	ids := []string{"ok", "rb", "pinned", "over", "wait", "step", "gone"}
	addDevices(t, s, ids...)
	r := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, ids...), false)
	for _, id := range ids {
		must(t, openFor(s, "s-"+id, id, rel, r.ID))
	}
	set := func(id string, ch fota.StateChange) {
		t.Helper()
		must(t, s.SetSessionState(ctx, id, ch))
	}
	set("s-ok", fota.StateChange{State: fota.SessionConfirmed, Reason: "self-test passed"})
	set("s-rb", fota.StateChange{State: fota.SessionRolledBack, Reason: "self-test failed"})
	// Replaced by a session outside the rollout: back to pending, and the
	// pin's outcome is not the rollout's.
	must(t, openFor(s, "s-pinned-2", "pinned", rel2, 0))
	set("s-pinned-2", fota.StateChange{State: fota.SessionRolledBack, Reason: "pin failed"})
	// The update service's word over the default.
	set("s-over", fota.StateChange{State: fota.SessionFailed, Reason: "outside its window", Member: fota.MemberPending})
	set("s-wait", fota.StateChange{State: fota.SessionRefused, Reason: "slot too small"})
	set("s-step", fota.StateChange{State: fota.SessionDownloaded})
	wantCode(t, s.SetSessionState(ctx, "s-step", fota.StateChange{State: fota.SessionVerified, Member: fota.MemberSilent}), fota.EINVALID)
	// A member a newer rollout took over keeps saying so.
	c.Advance(time.Minute)
	createRollout(t, s, newRollout(rel2, fota.RolloutRunning, 1), inWave(1, "gone"), true)
	set("s-gone", fota.StateChange{State: fota.SessionConfirmed})

	want := map[string][2]string{
		"ok": {fota.MemberConfirmed, ""}, "rb": {fota.MemberFailed, "self-test failed"}, "pinned": {fota.MemberPending, ""},
		"over": {fota.MemberPending, ""}, "wait": {fota.MemberFailed, "slot too small"}, "step": {fota.MemberOffered, ""},
		"gone": {fota.MemberSuperseded, ""},
	}
	for id, w := range want {
		m := member(t, s, r.ID, id)
		if m.State != w[0] || m.Reason != w[1] || m.SessionID != "s-"+id {
			t.Fatalf("member %s: %s %q (session %s), want %s %q (session s-%s)", id, m.State, m.Reason, m.SessionID, w[0], w[1], id)
		}
	}
	// A failure reason goes when the next session opens.
	must(t, openFor(s, "s-rb-2", "rb", rel, r.ID))
	if m := member(t, s, r.ID, "rb"); m.State != fota.MemberOffered || m.Reason != "" {
		t.Fatalf("member offered again: %s %q", m.State, m.Reason)
	}
}

func testRolloutTally(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	rel, rel2 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, rel2))
	addDevices(t, s, "p1", "c1", "sp", "f1", "dl", "si", "sd", "of", "rm")
	r := newRollout(rel, fota.RolloutRunning, 3)
	r.WaveEnds = []int{3, 5, 9, 9} // a fourth wave with no member
	members := append(append(inWave(1, "p1", "c1", "sp"), inWave(2, "f1", "dl")...), inWave(3, "si", "sd", "of", "rm")...)
	createRollout(t, s, r, members, false)

	// si and sd were offered long ago; sd and dl were served chunks.
	must(t, openFor(s, "s-si", "si", rel, r.ID))
	must(t, openFor(s, "s-sd", "sd", rel, r.ID))
	c.Advance(3 * time.Hour)
	silentBefore := c.Now().Add(-time.Hour)
	for _, id := range []string{"c1", "f1", "dl", "of"} {
		must(t, openFor(s, "s-"+id, id, rel, r.ID))
	}
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s-dl", Next: 2, Bytes: 2048}, {SessionID: "s-sd", Next: 1, Bytes: 1024}}))
	must(t, s.SetSessionState(ctx, "s-c1", fota.StateChange{State: fota.SessionConfirmed}))
	must(t, s.SetSessionState(ctx, "s-f1", fota.StateChange{State: fota.SessionRolledBack, Reason: "boot loop"}))
	_, err := s.RemoveDevice(ctx, "rm")
	must(t, err)
	createRollout(t, s, newRollout(rel2, fota.RolloutRunning, 1), inWave(1, "sp"), true)

	got := memberStates(t, s, r.ID, silentBefore)
	if want := "c1:confirmed p1:pending sp:superseded dl:downloading f1:failed of:offered rm:removed sd:silent si:silent"; got != want {
		t.Fatalf("members\n%s\nwant\n%s", got, want)
	}
	// Without a silent timeout, sd reads as downloading.
	if got := memberStates(t, s, r.ID, time.Time{}); !strings.Contains(got, "sd:downloading si:offered") {
		t.Fatalf("members with no silent timeout: %s", got)
	}
	tally, err := s.RolloutTally(ctx, r.ID, silentBefore)
	must(t, err)
	want := []fota.WaveTally{
		{Wave: 1, Members: 3, Pending: 1, Confirmed: 1, Superseded: 1},
		{Wave: 2, Members: 2, Offered: 1, Downloading: 1, Failed: 1},
		{Wave: 3, Members: 4, Offered: 3, Silent: 2, Removed: 1},
		{Wave: 4},
	}
	if !reflect.DeepEqual(tally, want) {
		t.Fatalf("tally\n%+v\nwant\n%+v", tally, want)
	}
	_, err = s.RolloutTally(ctx, 999, silentBefore)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.RolloutMembers(ctx, 999, silentBefore)
	wantCode(t, err, fota.ENOTFOUND)
}

func testTransitionRollout(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "token:ops")
	rel := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, rel))
	addDevices(t, s, "d1")
	r := createRollout(t, s, newRollout(rel, fota.RolloutScheduled, 0), inWave(1, "d1"), false)

	// Replicas racing to start it: exactly one does.
	c.Advance(time.Minute)
	start := fota.RolloutTransition{FromState: fota.RolloutScheduled, FromWave: 0, State: fota.RolloutRunning, Wave: 1,
		Event: fota.EventRolloutWaveOpened, Detail: "wave 1 of 3 opened"}
	const racers = 8
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.TransitionRollout(ctx, r.ID, start)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch fota.ErrorCode(err) {
		case "":
			won++
		case fota.ECONFLICT:
		default:
			t.Fatalf("TransitionRollout: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d racing transitions applied, want 1", won, racers)
	}
	opened := eventsOf(t, s, fota.EventRolloutWaveOpened)
	if len(opened) != 1 || opened[0].RolloutID != r.ID || opened[0].Detail != "wave 1 of 3 opened" || opened[0].ReleaseVersion != "1.0.4" ||
		opened[0].Actor != "token:ops" {
		t.Fatalf("wave-opened events %+v", opened)
	}
	got, _ := s.Rollout(ctx, r.ID)
	if got.State != fota.RolloutRunning || got.Wave != 1 || !got.WaveOpened.Equal(c.Now()) || !got.Updated.Equal(c.Now()) {
		t.Fatalf("started rollout: %s wave %d opened %v", got.State, got.Wave, got.WaveOpened)
	}
	_, err := s.TransitionRollout(ctx, r.ID, start)
	wantCode(t, err, fota.ECONFLICT)
	if !strings.Contains(fota.ErrorMessage(err), "running at wave 1") {
		t.Fatalf("stale transition: %q does not say where the rollout is", fota.ErrorMessage(err))
	}

	step := func(from string, fromWave int, to string, wave int, ev string) {
		t.Helper()
		c.Advance(time.Minute)
		_, err := s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: from, FromWave: fromWave, State: to, Wave: wave,
			Reason: "why " + to, GateBase: wave, Event: ev})
		must(t, err)
	}
	firstOpened := c.Now()
	step(fota.RolloutRunning, 1, fota.RolloutPaused, 1, fota.EventRolloutPaused)
	step(fota.RolloutPaused, 1, fota.RolloutRunning, 1, fota.EventRolloutResumed)
	got, _ = s.Rollout(ctx, r.ID)
	if !got.WaveOpened.Equal(firstOpened) || got.Reason != "why running" || got.GateBase != 1 {
		t.Fatalf("after pause and resume in wave 1: opened %v (want %v), reason %q, gate base %d", got.WaveOpened, firstOpened, got.Reason, got.GateBase)
	}
	step(fota.RolloutRunning, 1, fota.RolloutRunning, 2, fota.EventRolloutWaveOpened)
	got, _ = s.Rollout(ctx, r.ID)
	if got.Wave != 2 || !got.WaveOpened.Equal(c.Now()) || got.GateBase != 2 {
		t.Fatalf("after opening wave 2: wave %d opened %v gate base %d", got.Wave, got.WaveOpened, got.GateBase)
	}

	_, err = s.TransitionRollout(ctx, 999, start)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 2, State: "sideways", Wave: 2,
		Event: fota.EventRolloutPaused})
	wantCode(t, err, fota.EINVALID)
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 2, State: fota.RolloutPaused, Wave: 2})
	wantCode(t, err, fota.EINVALID)
	if got, _ := s.Rollout(ctx, r.ID); got.State != fota.RolloutRunning {
		t.Fatalf("refused transitions moved the rollout to %s", got.State)
	}
}

func testTransitionEndsSessions(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel, pinned := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, pinned))
	addDevices(t, s, "d1", "d2", "d3", "d4")
	r := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d1", "d2", "d3", "d4"), false)
	must(t, openFor(s, "s1", "d1", rel, r.ID))
	must(t, openFor(s, "s2", "d2", rel, r.ID))
	must(t, openFor(s, "s3", "d3", pinned, 0))
	must(t, openFor(s, "s4", "d4", rel, r.ID))
	must(t, s.SetSessionState(ctx, "s4", fota.StateChange{State: fota.SessionConfirmed}))

	ended, err := s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 1, State: fota.RolloutHalted, Wave: 1,
		Reason: "gate: 2 of 2 failed", Event: fota.EventRolloutHalted, Detail: "2 of 2 failed", EndSessions: true})
	must(t, err)
	var ids []string
	for _, sess := range ended {
		ids = append(ids, sess.ID)
	}
	slices.Sort(ids)
	if fmt.Sprint(ids) != "[s1 s2]" {
		t.Fatalf("ended %v, want [s1 s2]", ids)
	}
	for _, id := range []string{"s1", "s2"} {
		if sess, _ := s.Session(ctx, id); sess.State != fota.SessionAbandoned || sess.Reason != "gate: 2 of 2 failed" {
			t.Fatalf("session %s: %s %q", id, sess.State, sess.Reason)
		}
	}
	if sess, _ := s.Session(ctx, "s3"); sess.State != fota.SessionOpen {
		t.Fatalf("a session outside the rollout is %s", sess.State)
	}
	if got := memberStates(t, s, r.ID, time.Time{}); got != "d1:pending d2:pending d3:pending d4:confirmed" {
		t.Fatalf("members after the halt: %s", got)
	}
	abandoned := eventsOf(t, s, fota.EventAbandoned)
	if len(abandoned) != 2 || abandoned[0].RolloutID != r.ID || abandoned[1].RolloutID != r.ID {
		t.Fatalf("abandoned events %+v", abandoned)
	}
	if halted := eventsOf(t, s, fota.EventRolloutHalted); len(halted) != 1 || halted[0].RolloutID != r.ID || halted[0].Detail != "2 of 2 failed" {
		t.Fatalf("halted events %+v", halted)
	}
	// Without EndSessions, sessions stay.
	must(t, openFor(s, "s5", "d1", pinned, 0))
	ended, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutHalted, FromWave: 1, State: fota.RolloutAborted, Wave: 1,
		Event: fota.EventRolloutAborted})
	must(t, err)
	if len(ended) != 0 {
		t.Fatalf("a transition without EndSessions ended %d sessions", len(ended))
	}
}

func testWithdrawAbortsRollouts(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel, other := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, other))
	addDevices(t, s, "d1", "d2", "d3", "d4")
	a := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d1"), false)
	paused := createRollout(t, s, newRollout(rel, fota.RolloutPaused, 1), inWave(1, "d4"), false)
	done := createRollout(t, s, newRollout(rel, fota.RolloutCompleted, 3), inWave(1, "d2"), false)
	b := createRollout(t, s, newRollout(other, fota.RolloutRunning, 1), inWave(1, "d3"), false)
	must(t, openFor(s, "s1", "d1", rel, a.ID))

	ended, err := s.WithdrawRelease(ctx, rel.ID, "bricks the inverter link")
	must(t, err)
	if len(ended) != 1 || ended[0].ID != "s1" || ended[0].RolloutID != a.ID {
		t.Fatalf("withdrawal ended %+v", ended)
	}
	for _, id := range []int64{a.ID, paused.ID} {
		got, _ := s.Rollout(ctx, id)
		if got.State != fota.RolloutAborted || got.Reason != "release withdrawn: bricks the inverter link" {
			t.Fatalf("rollout %d of the withdrawn release: %s %q", id, got.State, got.Reason)
		}
	}
	if got, _ := s.Rollout(ctx, done.ID); got.State != fota.RolloutCompleted {
		t.Fatalf("completed rollout became %s", got.State)
	}
	if got, _ := s.Rollout(ctx, b.ID); got.State != fota.RolloutRunning {
		t.Fatalf("another release's rollout became %s", got.State)
	}
	if m := member(t, s, a.ID, "d1"); m.State != fota.MemberPending {
		t.Fatalf("member of an ended session is %s", m.State)
	}
	aborted := eventsOf(t, s, fota.EventRolloutAborted)
	if len(aborted) != 2 || aborted[0].RolloutID+aborted[1].RolloutID != a.ID+paused.ID || aborted[0].ReleaseVersion != "1.0.4" ||
		aborted[0].Detail != "release withdrawn: bricks the inverter link" {
		t.Fatalf("aborted events %+v", aborted)
	}
}

func testDeleteReleaseOfRollout(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel, old := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.3")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, old))
	addDevices(t, s, "d1", "d2")
	r := createRollout(t, s, newRollout(rel, fota.RolloutHalted, 1), inWave(1, "d1"), false)
	err := s.DeleteRelease(ctx, rel.ID)
	wantCode(t, err, fota.ECONFLICT)
	if msg := fota.ErrorMessage(err); !strings.Contains(msg, fmt.Sprintf("rollout %d (halted)", r.ID)) || !strings.Contains(msg, "abort") {
		t.Fatalf("delete refusal %q does not name rollout %d and say to abort it", msg, r.ID)
	}
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutHalted, FromWave: 1, State: fota.RolloutAborted, Wave: 1,
		Event: fota.EventRolloutAborted})
	must(t, err)
	must(t, s.DeleteRelease(ctx, rel.ID))
	got, err := s.Rollout(ctx, r.ID)
	must(t, err)
	if got.ReleaseID != 0 || got.ReleaseVersion != "1.0.4" {
		t.Fatalf("rollout of a deleted release: release %d %q, want 0 \"1.0.4\"", got.ReleaseID, got.ReleaseVersion)
	}
	// A completed rollout does not hold its release either.
	createRollout(t, s, newRollout(old, fota.RolloutCompleted, 3), inWave(1, "d2"), false)
	must(t, s.DeleteRelease(ctx, old.ID))
}

func testRemoveDeviceFromRollouts(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	rel, rel2 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, rel2))
	addDevices(t, s, "d1", "d2")
	old := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d1", "d2"), false)
	r := createRollout(t, s, newRollout(rel2, fota.RolloutRunning, 1), inWave(1, "d1"), true)
	must(t, openFor(s, "s1", "d1", rel2, r.ID))

	ended, err := s.RemoveDevice(ctx, "d1")
	must(t, err)
	if len(ended) != 1 || ended[0].ID != "s1" {
		t.Fatalf("removal ended %+v", ended)
	}
	if got := memberStates(t, s, r.ID, time.Time{}); got != "d1:removed" {
		t.Fatalf("members after removal: %s", got)
	}
	if got := memberStates(t, s, old.ID, time.Time{}); got != "d1:superseded d2:pending" {
		t.Fatalf("an ended membership changed on removal: %s", got)
	}
	_, _, err = s.DeviceRollout(ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)

	// Pruned, the tombstone takes its memberships along; the id, registered
	// again, is in no rollout.
	c.Advance(time.Hour)
	n, err := s.PruneRemovedDevices(ctx, c.Now(), 10)
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d devices, want 1", n)
	}
	if got := memberStates(t, s, old.ID, time.Time{}); got != "d2:pending" {
		t.Fatalf("members after pruning: %s", got)
	}
	addDevices(t, s, "d1")
	_, _, err = s.DeviceRollout(ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)
}

func testJoinRollout(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r1, r2, r3 := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5"), NewRelease("esp32", "1.0.6")
	for _, r := range []*fota.Release{r1, r2, r3} {
		must(t, s.CreateRelease(ctx, r))
	}
	addDevices(t, s, "d1", "new", "held", "done")
	s3 := NewDevice("s3")
	s3.Hardware = "esp32s3"
	must(t, s.CreateDevice(ctx, s3))
	doneRollout := createRollout(t, s, newRollout(r1, fota.RolloutCompleted, 3), inWave(1, "done"), false)
	holder := createRollout(t, s, newRollout(r2, fota.RolloutPaused, 1), inWave(1, "held"), false)
	a := createRollout(t, s, newRollout(r3, fota.RolloutRunning, 1), inWave(1, "d1"), false)

	c.Advance(time.Minute)
	join := func(dev string, wave int) (bool, error) {
		return s.JoinRollout(ctx, &fota.RolloutMember{RolloutID: a.ID, DeviceID: dev, Wave: wave})
	}
	m := &fota.RolloutMember{RolloutID: a.ID, DeviceID: "new", Wave: 2}
	joined, err := s.JoinRollout(ctx, m)
	must(t, err)
	if !joined || m.State != fota.MemberPending || !m.Updated.Equal(c.Now()) {
		t.Fatalf("join: %v, member %+v", joined, m)
	}
	if _, got, _ := s.DeviceRollout(ctx, "new"); got.RolloutID != a.ID || got.Wave != 2 || got.State != fota.MemberPending {
		t.Fatalf("joined device's membership %+v", got)
	}
	for _, dev := range []string{"new", "d1", "held"} {
		joined, err := join(dev, 1)
		must(t, err)
		if joined {
			t.Fatalf("%s joined rollout %d, though a member or held", dev, a.ID)
		}
	}
	if _, got, _ := s.DeviceRollout(ctx, "held"); got.RolloutID != holder.ID {
		t.Fatalf("held device moved to rollout %d", got.RolloutID)
	}
	// A completed rollout holds nothing: its member moves, superseded.
	joined, err = join("done", 1)
	must(t, err)
	if !joined {
		t.Fatal("a device of a completed rollout did not join")
	}
	if got := memberStates(t, s, doneRollout.ID, time.Time{}); got != "done:superseded" {
		t.Fatalf("completed rollout's member after the join: %s", got)
	}
	if got := memberStates(t, s, a.ID, time.Time{}); got != "d1:pending done:pending new:pending" {
		t.Fatalf("members after joins: %s", got)
	}
	_, err = join("s3", 1)
	wantCode(t, err, fota.EINVALID)
	_, err = join("nobody", 1)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = join("new", 9)
	wantCode(t, err, fota.EINVALID)
	_, err = s.JoinRollout(ctx, &fota.RolloutMember{RolloutID: 999, DeviceID: "new", Wave: 1})
	wantCode(t, err, fota.ENOTFOUND)
}

// testRolloutEvents: what a session of a rollout records names it.
func testRolloutEvents(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, rel))
	addDevices(t, s, "d1")
	r := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 1), inWave(1, "d1"), false)
	must(t, openFor(s, "s1", "d1", rel, r.ID))
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s1", Next: 4, Bytes: 4096}}))
	must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionDownloaded}))
	must(t, openFor(s, "s2", "d1", rel, r.ID)) // abandons s1
	must(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: fota.SessionConfirmed}))
	must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d1", Detail: "outside any rollout"}))

	evs, err := s.Events(ctx, fota.EventFilter{DeviceID: "d1"})
	must(t, err)
	kinds := map[string]int{}
	for _, e := range evs {
		switch {
		case e.Kind == fota.EventDeviceAdded || e.Detail == "outside any rollout":
			if e.RolloutID != 0 {
				t.Fatalf("event %s names rollout %d", e.Kind, e.RolloutID)
			}
		case e.RolloutID != r.ID:
			t.Fatalf("event %s of a rollout session names rollout %d, want %d", e.Kind, e.RolloutID, r.ID)
		default:
			kinds[e.Kind]++
		}
	}
	if kinds[fota.EventSessionOpened] != 2 || kinds[fota.EventProgress] != 4 || kinds[fota.EventDownloaded] != 1 ||
		kinds[fota.EventAbandoned] != 1 || kinds[fota.EventConfirmed] != 1 {
		t.Fatalf("rollout session events by kind: %v", kinds)
	}
}

// testRolloutTrust: EcoWatt-API sessions move the member only of an
// EcoWatt-only device, read silent only once served every chunk, and the
// tally tells EcoWatt-only members apart; accepting failures moves the
// failed members to accepted.
func testRolloutTrust(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	rel := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, rel))
	both, eco, eco2, nat := NewDevice("both"), NewDevice("eco"), NewDevice("eco2"), NewDevice("nat")
	both.API, eco.API, eco2.API = fota.APIBoth, fota.APIEcoWatt, fota.APIEcoWatt
	for _, d := range []*fota.Device{both, eco, eco2, nat} {
		must(t, s.CreateDevice(ctx, d))
	}
	r := newRollout(rel, fota.RolloutRunning, 1)
	r.WaveEnds = []int{4}
	createRollout(t, s, r, inWave(1, "both", "eco", "eco2", "nat"), false)
	open := func(id, dev, api string) {
		t.Helper()
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: api,
			TotalChunks: 4, RolloutID: r.ID}, fota.SessionCaps{}))
	}
	open("s-both", "both", fota.APIEcoWatt)
	open("s-eco", "eco", fota.APIEcoWatt)
	open("s-eco2", "eco2", fota.APIEcoWatt)
	open("s-nat", "nat", fota.APINative)
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s-eco2", Next: 4, Bytes: 4096}}))
	must(t, s.SetSessionState(ctx, "s-both", fota.StateChange{State: fota.SessionFailed, Reason: "forged"}))
	// Session events say which API their session is on.
	evs, err := s.Events(ctx, fota.EventFilter{Limit: 100})
	must(t, err)
	apis := map[string]string{}
	for _, e := range evs {
		if e.SessionID != "" {
			apis[e.Kind+" "+e.SessionID] = e.API
		}
	}
	if apis["session-opened s-nat"] != fota.APINative || apis["session-opened s-eco"] != fota.APIEcoWatt ||
		apis["failed s-both"] != fota.APIEcoWatt || apis["progress s-eco2"] != fota.APIEcoWatt {
		t.Fatalf("session events' APIs: %v", apis)
	}
	c.Advance(3 * time.Hour)
	silentBefore := c.Now().Add(-time.Hour)
	// both: untouched by its EcoWatt session; eco: one check-in, not
	// silent; eco2: served everything, then silence.
	if got, want := memberStates(t, s, r.ID, silentBefore), "both:pending eco:offered eco2:silent nat:silent"; got != want {
		t.Fatalf("members %s, want %s", got, want)
	}
	tally, err := s.RolloutTally(ctx, r.ID, silentBefore)
	must(t, err)
	if want := (fota.WaveTally{Wave: 1, Members: 4, Pending: 1, Offered: 3, Silent: 2, Downloading: 0, Legacy: 2, LegacySilent: 1}); tally[0] != want {
		t.Fatalf("tally %+v, want %+v", tally[0], want)
	}
	must(t, s.SetSessionState(ctx, "s-nat", fota.StateChange{State: fota.SessionRolledBack, Reason: "boot loop"}))
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutRunning, FromWave: 1, State: fota.RolloutHalted,
		Wave: 1, Event: fota.EventRolloutHalted})
	must(t, err)
	_, err = s.TransitionRollout(ctx, r.ID, fota.RolloutTransition{FromState: fota.RolloutHalted, FromWave: 1, State: fota.RolloutRunning,
		Wave: 1, Event: fota.EventRolloutResumed, AcceptFailures: true})
	must(t, err)
	if m := member(t, s, r.ID, "nat"); m.State != fota.MemberAccepted || m.Reason != "boot loop" {
		t.Fatalf("nat after its failure was accepted: %+v", m)
	}
}
