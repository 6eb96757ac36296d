package agent_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// throughTap makes a device check in through tap, with its clock skew off
// the real one.
func throughTap(d *device, tap *testserver.Tap, skew *atomic.Int64) {
	d.configHook = func(c *agent.Config) {
		c.Server = tap.URL
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}
}

// Every native check-in tells the server the device's inventory, in a body
// the real server authenticates and accepts; what the device does not
// know is left out.
func TestCheckInCarriesInventory(t *testing.T) {
	h := newHarness(t)
	tap := h.Tap()
	var skew atomic.Int64
	for i, row := range []struct {
		name string
		chip string
		size int64
	}{
		{"chip set", "esp32s3", 768 << 10},
		{"chip unknown", "", slotSize},
	} {
		t.Run(row.name, func(t *testing.T) {
			d := h.newDeviceSized(fmt.Sprintf("dev%d", i), agent.APINative, row.size)
			throughTap(d, tap, &skew)
			hook := d.configHook
			d.configHook = func(c *agent.Config) { hook(c); c.Chip = row.chip }
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			if res, err := d.agent.CheckOnce(t_ctx); err != nil || res.Updated {
				t.Fatalf("check: %+v %v", res, err)
			}
			raw := tap.RawChecks()
			body := raw[len(raw)-1]
			var req protocol.CheckRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatal(err)
			}
			if req.Version != "1.0.3" || req.Hardware != "esp32" || req.Inventory == nil {
				t.Fatalf("check-in %s", body)
			}
			inv := *req.Inventory
			if _, err := d.disk.Free(); err == nil && inv.FreeFlash <= 0 {
				t.Fatalf("free flash %d, though the folder's filesystem tells it", inv.FreeFlash)
			} else if err != nil && bytes.Contains(body, []byte(`"free_flash"`)) {
				t.Fatalf("free flash sent though unknown: %s", body)
			}
			inv.FreeFlash = 0
			if want := (protocol.Inventory{Chip: row.chip, SlotSize: row.size, AgentVersion: agent.Version}); inv != want {
				t.Fatalf("inventory %+v, want %+v", inv, want)
			}
			if row.chip == "" && bytes.Contains(body, []byte(`"chip"`)) {
				t.Fatalf("an unknown chip is sent: %s", body)
			}
			if strings.Count(string(body), "inventory") != 1 {
				t.Fatalf("check-in %s", body)
			}
		})
	}
}
