package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/protocol"
)

// publishOnly uploads a release that no rollout offers yet.
func (e *env) publishOnly(version string, size int) {
	e.t.Helper()
	b := e.build(version, e.signer, size)
	if _, err := e.admin.Publish(context.Background(), bytes.NewReader(b.bundle)); err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
}

// A fleet of 200; wave 1 is 10%. Three canaries roll back: the rollout
// halts, the canary downloads under way get 410, and no device outside
// wave 1 ever opens a session for the release.
func TestRolloutHaltsFleetOf200(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publishOnly("1.0.4", 20_000)
	devices := map[string]*client.Device{}
	for i := range 200 {
		id := fmt.Sprintf("fleet-%03d", i)
		devices[id] = e.device(id, e.addDevice(id, "1.0.3"))
	}
	ro, err := e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: "1.0.4", Waves: "10%,100%", Soak: "1h", MaxFailures: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if ro.Counts.Targeted != 200 || fmt.Sprint(ro.WaveEnds) != "[20 200]" || ro.State != fota.RolloutRunning {
		t.Fatalf("created: %+v", ro)
	}
	show, err := e.admin.Rollout(ctx, ro.ID)
	if err != nil {
		t.Fatal(err)
	}
	var wave1 []string
	for _, m := range show.Devices {
		if m.Wave == 1 {
			wave1 = append(wave1, m.ID)
		}
	}
	slices.Sort(wave1)
	if len(wave1) != 20 {
		t.Fatalf("wave 1 has %d devices", len(wave1))
	}
	failing, inFlight := wave1[:3], wave1[3:8]

	// Five canaries start downloading.
	offers := map[string]*protocol.CheckResponse{}
	for _, id := range inFlight {
		r, err := devices[id].Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
		if err != nil || !r.Update {
			t.Fatalf("%s: %+v %v", id, r, err)
		}
		download(t, devices[id], r, 0, 4, nil)
		offers[id] = r
	}
	// Three canaries install it and roll back.
	for _, id := range failing {
		d := devices[id]
		r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
		if err != nil || !r.Update {
			t.Fatalf("%s: %+v %v", id, r, err)
		}
		download(t, d, r, 0, 16, nil)
		if err := d.Report(ctx, r.SessionID, fota.SessionRolledBack, "self-test failed: inverter link down"); err != nil {
			t.Fatal(err)
		}
	}
	show, err = e.admin.Rollout(ctx, ro.ID)
	if err != nil {
		t.Fatal(err)
	}
	if show.State != fota.RolloutHalted || show.Counts.Failed != 3 || !strings.Contains(show.Reason, "over the limit of 2") {
		t.Fatalf("after three rollbacks: %s %q counts %+v", show.State, show.Reason, show.Counts)
	}
	// The downloads under way are told to stop, with the reason.
	for id, r := range offers {
		err := devices[id].Chunks(ctx, r.SessionID, protocol.PreferredChunkMAC(r.ChunkMACs), 4, 4, r.ChunkSize, func(protocol.Frame) error { return nil })
		var api *client.APIError
		if !errors.As(err, &api) || api.Status != 410 || !strings.Contains(api.Message, "halted") {
			t.Fatalf("%s's next chunk request after the halt: %v", id, err)
		}
	}
	// Every device of the fleet checks in, concurrently, three times.
	var wg sync.WaitGroup
	for id, d := range devices {
		wg.Go(func() {
			for range 3 {
				r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
				if err != nil || r.Update {
					t.Errorf("%s after the halt: %+v %v", id, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	evs, err := e.admin.Events(ctx, "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	opened := map[string]bool{}
	for _, ev := range evs {
		if ev.Kind == fota.EventSessionOpened && ev.Version == "1.0.4" {
			opened[ev.DeviceID] = true
			if ev.RolloutID != ro.ID {
				t.Errorf("session of %s names rollout %d, want %d", ev.DeviceID, ev.RolloutID, ro.ID)
			}
		}
	}
	for id := range opened {
		if !slices.Contains(wave1, id) {
			t.Errorf("%s, outside wave 1, opened a session for 1.0.4", id)
		}
	}
	if len(opened) != 8 {
		t.Fatalf("%d devices opened a session, want the 8 canaries that checked in", len(opened))
	}
}

func TestRolloutAdminAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publishOnly("1.0.4", 3000)
	for i := range 6 {
		ring := "main"
		if i < 2 {
			ring = "canary"
		}
		if _, err := e.admin.AddDevice(ctx, protocol.AddDevice{ID: fmt.Sprintf("d%d", i), Hardware: "esp32", Version: "1.0.3",
			Labels: map[string]string{"ring": ring}}); err != nil {
			t.Fatal(err)
		}
	}
	bad := []struct {
		req  protocol.CreateRollout
		want string
	}{
		{protocol.CreateRollout{Release: "9.9.9"}, "no release 9.9.9"},
		{protocol.CreateRollout{Release: "1.0.4", Selector: "ring==x"}, "ring==x"},
		{protocol.CreateRollout{Release: "1.0.4", Waves: "50%,10%"}, "10%"},
		{protocol.CreateRollout{Release: "1.0.4", Soak: "soon"}, "soak"},
		{protocol.CreateRollout{Release: "1.0.4", MaxFailures: "lots"}, "lots"},
		{protocol.CreateRollout{Release: "1.0.4", Windows: []string{"Mon-Fri 25:00-26:00"}}, "25:00"},
		{protocol.CreateRollout{Release: "1.0.4", Devices: []string{"nope"}}, "unknown devices: nope"},
		{protocol.CreateRollout{Release: "1.0.4", Devices: []string{"d1"}, Selector: "ring=main"}, "not both"},
	}
	for _, c := range bad {
		_, err := e.admin.CreateRollout(ctx, c.req)
		var api *client.APIError
		if !errors.As(err, &api) || api.Status/100 != 4 || !strings.Contains(api.Message, c.want) {
			t.Errorf("%+v: %v, want a 4xx saying %q", c.req, err, c.want)
		}
	}
	canary, err := e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: "1.0.4", Selector: "ring=canary"})
	if err != nil || canary.Counts.Targeted != 2 {
		t.Fatalf("canary rollout: %+v %v", canary, err)
	}
	_, err = e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: "1.0.4"})
	var api *client.APIError
	if !errors.As(err, &api) || api.Status != 409 || !strings.Contains(api.Message, fmt.Sprintf("rollout %d", canary.ID)) {
		t.Fatalf("overlapping rollout: %v", err)
	}
	// A device labelled into the canary ring joins the rollout.
	if _, err := e.admin.SetLabels(ctx, "d5", map[string]string{"ring": "canary", "site": "plant-3"}, nil); err != nil {
		t.Fatal(err)
	}
	show, err := e.admin.Rollout(ctx, canary.ID)
	if err != nil || show.Counts.Targeted != 3 || len(show.Devices) != 3 {
		t.Fatalf("after labelling d5: %+v %v", show, err)
	}
	d, err := e.admin.Device(ctx, "d5")
	if err != nil || d.Device.Labels["site"] != "plant-3" {
		t.Fatalf("labels: %+v %v", d, err)
	}
	for _, step := range []struct{ action, state string }{{"pause", "paused"}, {"resume", "running"}, {"abort", "aborted"}} {
		r, err := e.admin.RolloutAction(ctx, canary.ID, step.action, "operator "+step.action)
		if err != nil || r.State != step.state {
			t.Fatalf("%s: %+v %v", step.action, r, err)
		}
	}
	if _, err := e.admin.RolloutAction(ctx, canary.ID, "resume", ""); !errors.As(err, &api) || api.Status != 409 {
		t.Fatalf("resuming an aborted rollout: %v", err)
	}
	if _, err := e.admin.RolloutAction(ctx, canary.ID, "explode", ""); !errors.As(err, &api) || api.Status != 404 {
		t.Fatalf("unknown action: %v", err)
	}
	// Its devices are free again.
	all, err := e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: "1.0.4"})
	if err != nil || all.Counts.Targeted != 6 {
		t.Fatalf("rollout to all after the abort: %+v %v", all, err)
	}
	list, err := e.admin.Rollouts(ctx)
	if err != nil || len(list) != 2 || list[0].ID != all.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
	if m := e.metricsText(); !strings.Contains(m, fmt.Sprintf(`fota_rollout_devices{release="1.0.4",rollout="%d",state="pending"} 6`, all.ID)) {
		t.Fatalf("metrics have no rollout gauge:\n%s", m)
	}
	// A read token can look, not act.
	readToken := TokenPrefix + "read-token-0123456789"
	if err := e.store.CreateToken(ctx, &fota.Token{Name: "reader", Scope: fota.ScopeRead, Hash: HashToken(readToken)}); err != nil {
		t.Fatal(err)
	}
	reader, _ := client.NewAdmin(e.http.URL, readToken)
	if _, err := reader.Rollout(ctx, all.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.RolloutAction(ctx, all.ID, "pause", ""); !errors.As(err, &api) || api.Status != 403 {
		t.Fatalf("a read token pausing: %v", err)
	}
}

func TestPublishRolloutAll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.build("1.0.4", e.signer, 3000)
	if _, err := e.admin.PublishRollout(ctx, bytes.NewReader(b.bundle), "some"); err == nil || !strings.Contains(err.Error(), "only rollout a publish makes is all") {
		t.Fatalf("?rollout=some: %v", err)
	}
	if rels, _ := e.admin.Releases(ctx); len(rels) != 0 {
		t.Fatalf("a refused publish stored %d releases", len(rels))
	}
	rel, err := e.admin.PublishRollout(ctx, bytes.NewReader(b.bundle), "all")
	if err != nil || rel.RolloutID == 0 {
		t.Fatalf("publish --rollout all: %+v %v", rel, err)
	}
	// A device registered afterwards joins it.
	psk := e.addDevice("late", "1.0.3")
	r, err := e.device("late", psk).Check(ctx, protocol.CheckRequest{Version: "1.0.3", Inventory: &protocol.Inventory{Chip: "esp32", SlotSize: 1 << 20,
		AgentVersion: "test"}})
	if err != nil || !r.Update {
		t.Fatalf("late device: %+v %v", r, err)
	}
	d, err := e.admin.Device(ctx, "late")
	if err != nil || d.Device.Inventory == nil || d.Device.Inventory.SlotSize != 1<<20 || d.Device.Inventory.Chip != "esp32" {
		t.Fatalf("inventory: %+v %v", d.Device.Inventory, err)
	}
}

// The native check answer carries the rollout's window: download now,
// install inside it.
func TestRolloutWindowInCheckAnswer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publishOnly("1.0.4", 3000)
	now := e.now().UTC().Truncate(time.Minute)
	start, end := now.Add(-time.Hour), now.Add(time.Hour)
	window := fmt.Sprintf("%s-%s UTC", start.Format("15:04"), end.Format("15:04"))
	d1 := e.device("w1", e.addDevice("w1", "1.0.3"))
	d2 := e.device("w2", e.addDevice("w2", "1.0.3"))
	if _, err := e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: "1.0.4", Windows: []string{window}}); err != nil {
		t.Fatal(err)
	}
	r, err := d1.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !r.Update || !r.InstallAfter.IsZero() || !r.InstallUntil.Equal(end) {
		t.Fatalf("inside the window %s: %+v %v", window, r, err)
	}
	e.advance(2 * time.Hour)
	again, err := d1.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !again.Update || again.SessionID != r.SessionID || !again.InstallAfter.Equal(start.Add(24*time.Hour)) {
		t.Fatalf("after the window, the download under way: %+v %v", again, err)
	}
	other, err := d2.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || other.Update || !strings.Contains(other.Message, "only in its maintenance windows") {
		t.Fatalf("after the window, a device that had not started: %+v %v", other, err)
	}
}
