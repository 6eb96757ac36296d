package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// legacyRecording is a device's whole download of one release on the
// EcoWatt API, as a keyless on-path attacker records it: the check answer
// and every raw /ota/chunk answer. The chunk HMAC binds only the chunk
// number, so the recording stays valid for that device.
type legacyRecording struct {
	check  map[string]any
	chunks map[int][]byte
}

// legacyMITM forwards EcoWatt API traffic to the server; while replay is
// set it answers /ota/check and /ota/chunk from the recording instead,
// with the offer relabelled as label.
type legacyMITM struct {
	mu     sync.Mutex
	replay *legacyRecording
	label  string
}

func (m *legacyMITM) set(rec *legacyRecording, label string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replay, m.label = rec, label
}

func newLegacyMITM(t *testing.T, target string) (*legacyMITM, string) {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	m := &legacyMITM{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		rec, label := m.replay, m.label
		m.mu.Unlock()
		switch {
		case rec != nil && r.URL.Path == "/ota/check":
			answer := map[string]any{}
			for k, v := range rec.check {
				answer[k] = v
			}
			answer["version"] = label
			json.NewEncoder(w).Encode(answer)
		case rec != nil && r.URL.Path == "/ota/chunk":
			var req struct {
				ChunkNumber int `json:"chunk_number"`
			}
			json.Unmarshal(body, &req)
			raw, ok := rec.chunks[req.ChunkNumber]
			if !ok {
				http.Error(w, `{"error":"not recorded"}`, http.StatusBadRequest)
				return
			}
			w.Write(raw)
		default:
			r.Body = io.NopCloser(bytes.NewReader(body))
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// recordLegacy downloads release version as device id on the EcoWatt API,
// the device reporting that it runs running, and ends the session. A pin
// makes the server offer exactly that release; a first check-in reporting
// running lets the pin be older than what the device really runs (the
// server refuses pins that could never take effect). An admin clear then
// drops the backoff and rate-limit use the recording left.
func recordLegacy(t *testing.T, h *harness, id, running, version string) *legacyRecording {
	t.Helper()
	ctx := context.Background()
	post := func(path string, body any) []byte {
		b, _ := json.Marshal(body)
		resp, err := http.Post(h.serverURL+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("recording %s: %d %s", path, resp.StatusCode, raw)
		}
		return raw
	}
	post("/ota/check", map[string]string{"device_id": id, "current_version": running})
	if err := h.admin.Pin(ctx, id, version); err != nil {
		t.Fatal(err)
	}
	rec := &legacyRecording{chunks: map[int][]byte{}}
	json.Unmarshal(post("/ota/check", map[string]string{"device_id": id, "current_version": running}), &rec.check)
	if rec.check["update_available"] != true || rec.check["version"] != version {
		t.Fatalf("recording check: %v", rec.check)
	}
	for i := 0; i < int(rec.check["total_chunks"].(float64)); i++ {
		rec.chunks[i] = post("/ota/chunk", map[string]any{"device_id": id, "version": version, "chunk_number": i})
	}
	post("/ota/verify", map[string]any{"device_id": id, "version": version, "verified": false})
	if err := h.admin.Pin(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.ClearBackoffs(ctx, id); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestEcoWattAttackTable: the EcoWatt API signs only the firmware digest,
// so a validly signed image can be offered under any version. One row per
// way of abusing that; each must be refused, fatally, after the download
// and before the slot is marked, with the running image untouched, and a
// real update must still install afterwards.
func TestEcoWattAttackTable(t *testing.T) {
	rows := []struct {
		name    string
		setup   func(t *testing.T, h *harness, m *legacyMITM)
		want    string
		counter uint32 // the device's stored security counter
	}{
		{"older signed image relabelled as 9.9.9", func(t *testing.T, h *harness, m *legacyMITM) {
			h.publish("1.0.2", firmware.Healthy, 20<<10)
			m.set(recordLegacy(t, h, "dev1", "1.0.1", "1.0.2"), "9.9.9")
		}, "refusing update 1.0.2: not newer than the running 1.0.3 (downgrade)", 0},
		{"newer signed image relabelled as another version", func(t *testing.T, h *harness, m *legacyMITM) {
			m.set(recordLegacy(t, h, "dev1", "1.0.3", "1.0.4"), "9.9.9")
		}, "offered as 9.9.9, but the signed image's app descriptor says 1.0.4", 0},
		{"image for another chip released for this one", func(t *testing.T, h *harness, m *legacyMITM) {
			img, err := firmware.Sample(firmware.SampleOptions{Version: "1.0.5", Chip: "esp32s3", Size: 20 << 10})
			if err != nil {
				t.Fatal(err)
			}
			h.Publish(h.Bundle("1.0.5", img, 0, 0)) // the manifest says esp32
		}, "the image is built for esp32s3, this device is esp32", 0},
		{"lower secure_version", func(t *testing.T, h *harness, m *legacyMITM) {
			h.Publish(h.bundleFor("1.0.5", firmware.Healthy, 20<<10, 1))
		}, "the image's secure_version 1 is below the device's 3", 3},
		{"image without an app descriptor", func(t *testing.T, h *harness, m *legacyMITM) {
			img := make([]byte, 20<<10)
			rand.Read(img)
			h.Publish(h.Bundle("1.0.5", img, 0, 0))
		}, "refusing update 1.0.5: the image has no ESP32 app descriptor", 0},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 20<<10)
			m, url := newLegacyMITM(t, h.serverURL)
			d := h.newDeviceWithCounter("dev1", agent.APIEcoWatt, slotSize, row.counter)
			row.setup(t, h, m)
			d.configHook = func(c *agent.Config) {
				c.Server = url
				c.Retry = agent.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			before, _ := d.slots.Status()
			counterBefore := counterOf(t, d)
			_, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("error %v, want one saying %q", err, row.want)
			}
			if !agent.IsFatal(err) {
				t.Fatalf("error %v is not fatal: the agent would fetch the image again and again", err)
			}
			after, _ := d.slots.Status()
			if after.Next != before.Next || counterOf(t, d) != counterBefore || after.Slots[0] != before.Slots[0] ||
				after.Slots[1].State != agent.ImageEmpty {
				t.Fatalf("boot state changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if p := d.agent.Progress(); p.State != agent.StateError || p.Err == nil {
				t.Fatalf("progress %+v, want the error state", p)
			}
			if err := d.powerOn(); err != nil || d.running() != "1.0.3" || d.boot.Trial {
				t.Fatalf("after the attack: running %s (trial %v), %v", d.running(), d.boot.Trial, err)
			}

			// A real release still installs once the attacker is gone.
			m.set(nil, "")
			h.Publish(h.bundleFor("1.0.9", firmware.Healthy, 20<<10, row.counter))
			if res, err := d.cycle(); err != nil || !res.Updated || res.Version != "1.0.9" {
				t.Fatalf("real update: %+v %v", res, err)
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.9" {
				t.Fatalf("after the real update: running %s, %v", d.running(), err)
			}
			if st, _ := d.slots.Status(); st.Slots[st.Running].State != agent.ImageValid || counterOf(t, d) != row.counter {
				t.Fatalf("after the real update: %+v", st)
			}
			if evs := strings.Join(h.events(d.id), ", "); !strings.Contains(evs, "confirmed 1.0.9") {
				t.Fatalf("events: %s", evs)
			}
		})
	}
}

// TestEcoWattSecurityCounterFromDescriptor: on the EcoWatt API the image's
// secure_version is its security counter: an image at or above the stored
// counter installs, and confirming it raises the stored counter to it.
func TestEcoWattSecurityCounterFromDescriptor(t *testing.T) {
	h := newHarness(t)
	h.Publish(h.bundleFor("1.0.4", firmware.Healthy, 20<<10, 4))
	d := h.newDeviceWithCounter("dev1", agent.APIEcoWatt, slotSize, 3)
	if res, err := d.cycle(); err != nil || !res.Updated || res.Version != "1.0.4" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if _, err := d.cycle(); err != nil || d.running() != "1.0.4" {
		t.Fatalf("after the update: running %s, %v", d.running(), err)
	}
	st, _ := d.slots.Status()
	if st.Slots[st.Running].State != agent.ImageValid || counterOf(t, d) != 4 {
		t.Fatalf("after confirming: %+v, want a valid image and the stored counter at its secure_version 4", st)
	}
}

// TestEcoWattResumeKeepsDescriptor: the image's head, which the descriptor
// check needs, survives an interrupted download with the rest of the
// progress, so the download resumes from its checkpoint rather than from
// the first chunk, and the image still installs.
func TestEcoWattResumeKeepsDescriptor(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 64<<10)
	d := newDev(h, "dev1", agent.APIEcoWatt)
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading && p.Chunk == 20 {
			cancel() // the device goes away mid-download
		}
	}
	if _, err := d.agent.CheckOnce(ctx); err == nil {
		t.Fatal("the interrupted download succeeded")
	}
	resumedAt := -1
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading && resumedAt < 0 {
			resumedAt = p.Chunk
		}
	}
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	res, err := d.agent.CheckOnce(context.Background())
	if err != nil || !res.Updated || res.Version != "1.0.4" {
		t.Fatalf("resumed update: %+v %v", res, err)
	}
	if resumedAt != 16 {
		t.Fatalf("resumed at chunk %d, want the checkpoint at 16", resumedAt)
	}
}
