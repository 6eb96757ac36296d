package cli

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

func TestRolloutCommands(t *testing.T) {
	dir, keyDir := adminEnv(t)
	fw := filepath.Join(dir, "app.bin")
	b := filepath.Join(dir, "app.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", b, fw).expect(t, 0, "built", "")
	run(t, "release", "publish", "--rollout", "some", b).expect(t, 2, "", "the only rollout publish makes is all")
	run(t, "release", "publish", b).expect(t, 0, "no device is offered it yet: fota rollout create --release 1.0.4", "")
	for _, id := range []string{"c1", "c2", "m1", "m2", "m3"} {
		run(t, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, id+".json")).
			expect(t, 0, "added device "+id, "")
	}
	run(t, "device", "label", "--id", "c1", "ring=canary", "site=plant-3").expect(t, 0, "device c1: labels ring=canary,site=plant-3", "")
	run(t, "device", "label", "--id", "c1", "--remove", "site").expect(t, 0, "device c1: labels ring=canary", "")
	run(t, "device", "label", "--id", "c1", "Ring=x").expect(t, 2, "", "lower-case")
	run(t, "device", "label", "--id", "c1").expect(t, 2, "", "nothing to change")
	run(t, "device", "add", "--id", "c3", "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, "c3.json"),
		"--label", "ring=canary").expect(t, 0, "added device c3", "")
	run(t, "device", "list").expect(t, 0, "ring=canary", "")

	run(t, "rollout", "create").expect(t, 2, "", "--release is required")
	run(t, "rollout", "create", "--release", "1.0.4", "--waves", "200%").expect(t, 1, "", "200%")
	run(t, "rollout", "create", "--release", "1.0.4", "--selector", "ring=canary", "--waves", "1,all", "--soak", "2h",
		"--max-failures", "5%,1", "--min-outcomes", "1", "--window", "Mon-Fri 01:00-05:00 Europe/Berlin").
		expect(t, 0, "rollout 1: 1.0.4 for esp32 to 2 devices in 2 wave(s) of 1, 1 devices, running", "")
	run(t, "rollout", "create", "--release", "1.0.4").expect(t, 1, "", "rollout 1")
	run(t, "rollout", "create", "--release", "1.0.4", "--selector", "!ring").expect(t, 0, "to 4 devices", "")
	run(t, "rollout", "list").expect(t, 0, "ring=canary", "")
	run(t, "rollout", "create", "--release", "1.0.4", "--selector", "rng=canary").expect(t, 0, "to 0 devices", "label keys in use: ring")
	run(t, "device", "show", "--id", "c1").expect(t, 0, "rollout 1 (1.0.4, running, wave 1 open): this device is in wave", "")
	out := run(t, "rollout", "show", "1", "--json")
	out.expect(t, 0, `"state": "running"`, "")
	var r protocol.Rollout
	if err := json.Unmarshal([]byte(out.stdout), &r); err != nil {
		t.Fatal(err)
	}
	if r.ID != 1 || r.Counts.Targeted != 2 || len(r.Devices) != 2 || r.MaxFailures != "5%,1" || len(r.Windows) != 1 || r.Soak != "2h0m0s" {
		t.Fatalf("show --json: %+v", r)
	}
	run(t, "rollout", "show", "1").expect(t, 0, "window: Mon-Fri 01:00-05:00 Europe/Berlin", "")
	run(t, "rollout", "pause", "1", "--reason", "looking").expect(t, 0, "rollout 1: paused", "")
	run(t, "rollout", "resume", "1").expect(t, 0, "rollout 1: running", "")
	run(t, "rollout", "abort", "1").expect(t, 0, "rollout 1: aborted", "")
	run(t, "rollout", "resume", "1").expect(t, 1, "", "only a paused or halted rollout can be resumed")
	run(t, "rollout", "show", "x").expect(t, 2, "", "want a number")
	run(t, "rollout", "show", "99").expect(t, 1, "", "404")
}
