package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// TestRolloutPageShowsTraffic: the rollout page says what its sessions put
// on the wire, deltas apart from full images, and what the deltas saved.
func TestRolloutPageShowsTraffic(t *testing.T) {
	e := newEnv(t)
	base := e.srv.SampleLineage("1.0.3", firmware.Healthy, 32<<10, 0, "web")
	target := e.srv.SampleLineage("1.0.4", firmware.Healthy, 32<<10, 0, "web")
	psks := map[string]protocol.PSK{"dev-delta": e.srv.AddDevice("dev-delta", "1.0.3"), "dev-full": e.srv.AddDevice("dev-full", "1.0.3")}
	e.srv.Publish(e.srv.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: "1.0.3", Image: base}))
	sum := sha256.Sum256(base)
	var progress []fota.Progress
	for id, psk := range psks {
		dev, err := client.NewDevice(e.srv.URL, id, psk)
		if err != nil {
			t.Fatal(err)
		}
		req := protocol.CheckRequest{Version: "1.0.3"}
		if id == "dev-delta" {
			req.ImageSHA256, req.Delta = hex.EncodeToString(sum[:]), []string{"heatshrink"}
		}
		resp, err := dev.Check(context.Background(), req)
		if err != nil || !resp.Update || (resp.Artifact == "delta") != (id == "dev-delta") {
			t.Fatalf("%s: %+v %v", id, resp, err)
		}
		progress = append(progress, fota.Progress{SessionID: resp.SessionID, Next: resp.Chunks, Bytes: resp.CiphertextSize})
	}
	if err := e.srv.Store.RecordProgress(context.Background(), progress); err != nil {
		t.Fatal(err)
	}
	viewer := e.browser()
	viewer.signIn("vic")
	mustContain(t, viewer.get("/releases"), "delta from 1.0.3: ")
	mustContain(t, viewer.get("/rollouts/1"), "On the wire: full images 32.0 KiB to 1 session; deltas", "the 1 delta served in full took", "where the full images weigh 32.0 KiB: 9")
}
