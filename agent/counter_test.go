package agent_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/firmware"
)

// counterOf reads the device's stored security counter.
func counterOf(t *testing.T, d *device) uint32 {
	t.Helper()
	c, err := d.slots.SecurityCounter()
	if err != nil {
		t.Fatalf("security counter: %v", err)
	}
	return c
}

// reformatFromFactory damages both boot-state copies and formats the
// device from its factory image, as the simulated device does when its
// boot state is unreadable.
func reformatFromFactory(t *testing.T, d *device) {
	t.Helper()
	for i := range 2 {
		if err := os.WriteFile(filepath.Join(d.dir, fmt.Sprintf("otadata.%d", i)), []byte("worn-out flash"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if slotfile.Formatted(d.disk) {
		t.Fatal("the boot state still reads after damaging both copies")
	}
	factory, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3"})
	if err := slotfile.Format(d.disk, d.size, factory, agent.Image{Version: "1.0.3", Size: int64(len(factory)), SHA256: sha256.Sum256(factory)}); err != nil {
		t.Fatalf("format from factory: %v", err)
	}
}

// TestSecurityCounterSurvivesReformat: a device confirms an image with
// counter 7; both boot-state copies are then damaged and it formats itself
// from its factory image (counter 0). Its counter must still be 7, so a
// validly signed image with counter 3 is refused on both APIs, while one at
// the counter still installs. The image refused is 1.0.5, newer than the
// factory 1.0.3 the device fell back to: only the counter can refuse it.
func TestSecurityCounterSurvivesReformat(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h := newHarness(t)
			h.Publish(h.bundleFor("1.0.4", firmware.Healthy, 20<<10, 7))
			d := newDev(h, "dev-"+api, api)
			if res, err := d.cycle(); err != nil || !res.Updated {
				t.Fatalf("install 1.0.4: %+v %v", res, err)
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.4" || counterOf(t, d) != 7 {
				t.Fatalf("after confirming 1.0.4: running %s, %v", d.running(), err)
			}

			reformatFromFactory(t, d)
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			if d.running() != "1.0.3" || counterOf(t, d) != 7 {
				t.Fatalf("after the format: running %s with counter %d, want 1.0.3 with the counter still 7", d.running(), counterOf(t, d))
			}

			h.Publish(h.bundleFor("1.0.5", firmware.Healthy, 20<<10, 3))
			want := "the image's secure_version 3 is below the device's 7"
			var m *attacktest.MITM
			if api == agent.APINative {
				// The server knows the device's counter and would not offer
				// 1.0.5; a compromised server or network would.
				m = attacktest.NewMITM(t, h.serverURL)
				m.Check = attacktest.AsDevice(t, h.Server, "attacker", "esp32", "1.0.3", 0)
				d.configHook = func(c *agent.Config) { c.Server = m.URL }
				want = "security counter 3 is below the device's 7"
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			_, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), want) || !agent.IsFatal(err) {
				t.Fatalf("offer of 1.0.5 with counter 3: %v, want a fatal error saying %q", err, want)
			}
			if st, _ := d.slots.Status(); st.Slots[agent.Other(st.Running)].State != agent.ImageEmpty {
				t.Fatalf("refused image marked: %+v", st)
			}

			// A release at the counter still installs: the device is not stuck.
			if m != nil {
				m.Check = nil
			}
			h.Publish(h.bundleFor("1.0.6", firmware.Healthy, 20<<10, 7))
			if res, err := d.cycle(); err != nil || res.Version != "1.0.6" {
				t.Fatalf("install 1.0.6: %+v %v", res, err)
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.6" || counterOf(t, d) != 7 {
				t.Fatalf("after 1.0.6: running %s, counter %d, %v", d.running(), counterOf(t, d), err)
			}
		})
	}
}

// TestUnreadableCounterRefusesUpdates: with both copies of the counter's
// record damaged the device still boots its image, but refuses every
// update, fatally and before downloading, saying why; it does not judge
// offers against a counter of 0.
func TestUnreadableCounterRefusesUpdates(t *testing.T) {
	h := newHarness(t)
	h.Publish(h.bundleFor("1.0.4", firmware.Healthy, 20<<10, 7))
	d := newDev(h, "dev1", agent.APINative)
	for i := range 2 {
		if err := os.WriteFile(filepath.Join(d.dir, fmt.Sprintf("security_counter.%d", i)), []byte(`{"security_counter":7}`+"\nbad"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.powerOn(); err != nil || d.running() != "1.0.3" {
		t.Fatalf("boot with the counter unreadable: running %s, %v", d.running(), err)
	}
	_, err := d.agent.CheckOnce(context.Background())
	if err == nil || !errors.Is(err, agent.ErrCounterUnreadable) || !agent.IsFatal(err) || !strings.Contains(err.Error(), "refusing updates") {
		t.Fatalf("check with the counter unreadable: %v, want a fatal refusal naming the counter", err)
	}
	for _, p := range d.progress {
		if p.State == agent.StateDownloading {
			t.Fatalf("downloaded with the counter unreadable: %+v", p)
		}
	}
	if p := d.agent.Progress(); p.State != agent.StateError || p.Err == nil {
		t.Fatalf("progress %+v, want the error state", p)
	}
}
