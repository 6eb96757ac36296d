package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/firmware"
)

// TestAttackTable runs the attacks of attacktest.Attacks, the table the C
// client's end-to-end tests run too. Each must fail with its specific
// error, leave the boot state as it was, and let no byte of a bad chunk
// reach the slot.
func TestAttackTable(t *testing.T) {
	for _, row := range attacktest.Attacks() {
		t.Run(row.Name, func(t *testing.T) {
			h := newHarness(t)
			attacktest.PublishRelease(h.Server)
			m := attacktest.NewMITM(t, h.serverURL)
			d := h.newDeviceWithCounter(attacktest.DeviceID, agent.APINative, slotSize, row.Device.Counter)
			row.Setup(t, h.Server, m)
			d.configHook = func(c *agent.Config) {
				c.Server = m.URL
				c.Retry = agent.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}
				c.ChunkRetries = 1
				if row.Device.UpdateTimeout > 0 {
					c.UpdateTimeout = row.Device.UpdateTimeout
				}
				if row.Device.ChunksPerRequest > 0 {
					c.ChunksPerRequest = row.Device.ChunksPerRequest
				}
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			before, _ := d.slots.Status()
			counterBefore := counterOf(t, d)
			_, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), row.AgentError) {
				t.Fatalf("error %v, want one saying %q", err, row.AgentError)
			}
			after, _ := d.slots.Status()
			if after.Next != before.Next || counterOf(t, d) != counterBefore || after.Slots[0] != before.Slots[0] ||
				after.Slots[1].State != agent.ImageEmpty && after.Slots[1] != before.Slots[1] {
				t.Fatalf("boot state changed:\nbefore %+v\nafter  %+v", before, after)
			}
			// Whatever reached slot 1 is a prefix of the real firmware.
			fw := attacktest.ReleaseImage(h.Server)
			got := make([]byte, len(fw))
			n, _ := d.slots.ReadAt(1, got, 0)
			if n > 0 && !bytes.Equal(got[:n], fw[:n]) && !row.OtherImage {
				t.Fatalf("slot 1 holds %d bytes that are not the firmware", n)
			}
			// The device still boots its image.
			d.fault = nil
			if err := d.powerOn(); err != nil || d.running() != attacktest.Running {
				t.Fatalf("after the attack: running %s, %v", d.running(), err)
			}
			if row.Device.Counter == 0 { // a device above every release's counter is offered none
				attacktest.StillOffered(t, h.Server, attacktest.DeviceID, d.psk, 0)
			}
		})
	}
}

func (h *harness) newDeviceWithCounter(id, api string, size int64, counter uint32) *device {
	h.t.Helper()
	policy := api
	if policy == "" {
		policy = agent.APINative
	}
	psk := h.AddDeviceAPI(id, "1.0.3", policy)
	disk, err := slotfile.NewOSDisk(h.t.TempDir())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { disk.Close() })
	img, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3", SecureVersion: counter})
	if err := slotfile.Format(disk, size, img, agent.Image{Version: "1.0.3", Size: int64(len(img)), SHA256: sha256.Sum256(img), SecurityCounter: counter}); err != nil {
		h.t.Fatal(err)
	}
	return &device{h: h, id: id, api: api, psk: psk, disk: disk, size: size}
}
