package agent_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

const slotSize = 1 << 20

// harness is the test server plus the helpers these tests use.
type harness struct {
	*testserver.Server
	t         testing.TB
	serverURL string
	signer    *keys.SigningKey
	fwKey     keys.FirmwareKey
	admin     *client.Admin
	// factory, when set, is the 1.0.3 image new devices run instead of
	// the small sample.
	factory []byte
}

func newHarness(t testing.TB) *harness {
	s := testserver.New(t)
	return &harness{Server: s, t: t, serverURL: s.URL, signer: s.Signer, fwKey: s.FWKey, admin: s.Admin}
}

func (h *harness) bundleFor(version string, b firmware.Behaviour, size int, counter uint32) []byte {
	return h.Bundle(version, h.Sample(version, b, size, counter), 0, counter)
}

func (h *harness) publish(version string, b firmware.Behaviour, size int) {
	h.PublishSample(version, b, size)
}

func (h *harness) events(id string) []string { return h.Events(id) }

// device is a device on a folder; each powerOn is a boot.
type device struct {
	h        *harness
	id       string
	api      string
	psk      protocol.PSK
	size     int64  // slot size
	dir      string // its flash folder
	disk     *slotfile.OSDisk
	fault    *slotfile.FaultDisk // set for the next powerOn only
	slots    *slotfile.Slots
	agent    *agent.Agent
	boot     agent.BootInfo
	progress []agent.Progress
	mu       sync.Mutex
	// progressHook sees every progress update.
	progressHook func(agent.Progress)
	// configHook adjusts the agent configuration of every boot.
	configHook func(*agent.Config)
}

var t_ctx = context.Background()

func (h *harness) newDevice(id, api string) *device { return h.newDeviceSized(id, api, slotSize) }

func (h *harness) newDeviceSized(id, api string, size int64) *device {
	h.t.Helper()
	policy := api
	if policy == "" {
		policy = agent.APINative
	}
	psk := h.AddDeviceAPI(id, "1.0.3", policy)
	dir := h.t.TempDir()
	disk, err := slotfile.NewOSDisk(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { disk.Close() })
	img, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3"})
	if h.factory != nil {
		img = h.factory
	}
	if err := slotfile.Format(disk, size, img, agent.Image{Version: "1.0.3", Size: int64(len(img)), SHA256: sha256.Sum256(img)}); err != nil {
		h.t.Fatal(err)
	}
	return &device{h: h, id: id, api: api, psk: psk, disk: disk, size: size, dir: dir}
}

func (d *device) config() agent.Config {
	c := d.baseConfig()
	if d.configHook != nil {
		d.configHook(&c)
	}
	return c
}

func (d *device) baseConfig() agent.Config {
	return agent.Config{Server: d.h.serverURL, DeviceID: d.id, PSK: d.psk, Hardware: "esp32", TrustedKey: d.h.signer.Public(),
		FirmwareKey: d.h.fwKey, API: d.api, Retry: agent.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond},
		OnProgress: func(p agent.Progress) {
			d.mu.Lock()
			d.progress = append(d.progress, p)
			hook := d.progressHook
			d.mu.Unlock()
			if hook != nil {
				hook(p)
			}
		}}
}

// powerOn boots the device (through the fault disk if one is set) and
// runs the agent's startup. A power cut during either returns its error.
func (d *device) powerOn() error {
	var disk slotfile.Disk = d.disk
	if d.fault != nil {
		disk = d.fault
	}
	s, err := slotfile.Open(disk, d.size, 3)
	if err != nil {
		return err
	}
	bi, err := s.Boot()
	if err != nil {
		return err
	}
	a, err := agent.New(d.config(), s, bi)
	if err != nil {
		d.h.t.Fatal(err)
	}
	d.slots, d.agent, d.boot = s, a, bi
	return a.Startup(context.Background())
}

// selfTest does what the booted image does: confirm, reject, or crash.
func (d *device) selfTest() error {
	if !d.boot.Trial {
		return nil
	}
	img := make([]byte, d.boot.Image.Size)
	d.slots.ReadAt(d.boot.Slot, img, 0)
	b, err := firmware.BehaviourOf(img)
	if err != nil {
		return err
	}
	switch b {
	case firmware.Healthy:
		return d.agent.Confirm(context.Background())
	case firmware.FailSelfTest:
		return d.agent.Reject("self-test failed")
	}
	return nil // crash: the next powerOn is the reset
}

// cycle is power on, self-test, check once: what a device does per boot.
func (d *device) cycle() (agent.Result, error) {
	if err := d.powerOn(); err != nil {
		return agent.Result{}, err
	}
	if err := d.selfTest(); err != nil {
		return agent.Result{}, err
	}
	if d.boot.Trial {
		return agent.Result{}, nil // rejected or crashed: reboot
	}
	return d.agent.CheckOnce(context.Background())
}

func (d *device) running() string { return d.boot.Image.Version }

func newDev(h *harness, id, api string) *device { return h.newDevice(id, api) }

func TestHealthyUpdateBothAPIs(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 40_000)
			d := newDev(h, "dev-"+api, api)
			res, err := d.cycle()
			if err != nil || !res.Updated || res.Version != "1.0.4" {
				t.Fatalf("first cycle: %+v %v", res, err)
			}
			if res, err = d.cycle(); err != nil || res.Updated {
				t.Fatalf("second cycle: %+v %v", res, err)
			}
			if d.running() != "1.0.4" || d.boot.Slot != 1 {
				t.Fatalf("running %s in slot %d", d.running(), d.boot.Slot)
			}
			dev, _ := h.admin.Device(context.Background(), d.id)
			if dev.Device.Version != "1.0.4" {
				t.Fatalf("server thinks the device runs %s", dev.Device.Version)
			}
			evs := strings.Join(h.events(d.id), ", ")
			if !strings.Contains(evs, "confirmed 1.0.4") {
				t.Fatalf("events: %s", evs)
			}
			// Progress went through the states in order and reached 100%.
			var states []string
			for _, p := range d.progress {
				if len(states) == 0 || states[len(states)-1] != string(p.State) {
					states = append(states, string(p.State))
				}
			}
			got := strings.Join(states, ">")
			if !strings.Contains(got, "checking>downloading>verifying>applying>completed") {
				t.Fatalf("state chain %s", got)
			}
		})
	}
}

func TestFailingSelfTestRollsBack(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 20_000)
	d := newDev(h, "dev1", agent.APINative)
	d.cycle()
	d.cycle()
	h.publish("1.0.5", firmware.FailSelfTest, 20_000)
	if res, err := d.cycle(); err != nil || res.Version != "1.0.5" {
		t.Fatalf("install 1.0.5: %+v %v", res, err)
	}
	d.cycle() // boots 1.0.5, self-test fails, rejects
	if _, err := d.cycle(); err != nil {
		t.Fatal(err)
	}
	if d.running() != "1.0.4" {
		t.Fatalf("after rollback running %s", d.running())
	}
	evs := strings.Join(h.events(d.id), ", ")
	if !strings.Contains(evs, "rolled-back 1.0.5") {
		t.Fatalf("events: %s", evs)
	}
	st, _ := d.slots.Status()
	if st.Slots[0].State != agent.ImageInvalid && st.Slots[1].State != agent.ImageInvalid {
		t.Fatalf("no slot marked invalid: %+v", st)
	}
	// Not retried until a newer release: checks stay quiet.
	if res, err := d.agent.CheckOnce(context.Background()); err != nil || res.Updated {
		t.Fatalf("re-offered: %+v %v", res, err)
	}
	h.publish("1.0.6", firmware.Healthy, 20_000)
	if res, err := d.agent.CheckOnce(context.Background()); err != nil || res.Version != "1.0.6" {
		t.Fatalf("newer release: %+v %v", res, err)
	}
}

func TestCrashingImageRollsBackAfterMaxBoots(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Crash, 20_000)
	d := newDev(h, "dev1", agent.APIEcoWatt)
	d.cycle()
	for i := 0; i < 3; i++ {
		d.cycle()
		if !d.boot.Trial || d.running() != "1.0.4" {
			t.Fatalf("boot %d: %+v", i+1, d.boot)
		}
	}
	d.cycle()
	if d.running() != "1.0.3" || d.boot.Rollback != nil && !strings.Contains(d.boot.Rollback.Reason, "3 boots") {
		t.Fatalf("after 4 boots: %+v", d.boot)
	}
	if evs := strings.Join(h.events(d.id), ", "); !strings.Contains(evs, "rolled-back 1.0.4") {
		t.Fatalf("events: %s", evs)
	}
}
