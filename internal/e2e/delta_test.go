package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeltaEndToEnd is what an operator does: sample images of one product
// line, a 1.0.4 bundle with a delta from 1.0.3 (release build
// --delta-from), publish with a rollout to all. A device process that runs
// 1.0.3 downloads the patch, applies it and confirms; one run with
// --no-delta downloads the full image. fota status, the rollout and
// /metrics show what each put on the wire.
func TestDeltaEndToEnd(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	srv := startServer(t, dir)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	for _, v := range []string{"1.0.3", "1.0.4"} {
		fota(t, dir, env, "firmware", "sample", "--version", v, "--size", "512KiB", "--lineage", "ecowatt", "-o", "app-"+v+".bin")
	}
	fota(t, dir, env, "release", "build", "--keys", "keys", "-o", "app-1.0.3.fota", "app-1.0.3.bin")
	built := fota(t, dir, env, "release", "build", "--keys", "keys", "--delta-from", "app-1.0.3.fota", "-o", "app-1.0.4.fota", "app-1.0.4.bin")
	if !strings.Contains(built, "delta from 1.0.3") {
		t.Fatalf("build:\n%s", built)
	}
	devices := map[string][]string{"delta-1": nil, "full-1": {"--no-delta"}}
	for id := range devices {
		fota(t, dir, env, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3",
			"--credentials", id+".json", "--keys-h", id+"_keys.h", "--keys", "keys")
	}
	if out := fota(t, dir, env, "release", "publish", "--rollout", "all", "app-1.0.4.fota"); !strings.Contains(out, "deltas for native-API devices running 1.0.3 (") {
		t.Fatalf("publish does not name the deltas:\n%s", out)
	}
	if list := fota(t, dir, env, "release", "list"); !strings.Contains(lineOf(list, "1.0.4 "), " 1.0.3 ") {
		t.Fatalf("release list does not name the delta's base:\n%s", list)
	}
	procs := map[string]*deviceProc{}
	for id, extra := range devices {
		args := append([]string{"device", "run", "--credentials", id + ".json", "--keys-h", id + "_keys.h",
			"--state", filepath.Join("devices", id), "--version", "1.0.3", "--image", "app-1.0.3.bin",
			"--check-interval", "200ms", "--poll-interval", "50ms", "--upload-interval", "1s"}, extra...)
		procs[id] = runDevice(t, dir, args...)
	}
	for _, p := range procs {
		waitFor(t, p, "confirmed (running 1.0.4)", 60*time.Second)
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}
	if out := procs["delta-1"].out.String(); !strings.Contains(out, "a delta patch of") {
		t.Fatalf("the delta device did not say it downloaded a patch:\n%s", out)
	}
	if out := procs["full-1"].out.String(); strings.Contains(out, "delta patch") {
		t.Fatalf("the --no-delta device downloaded a patch:\n%s", out)
	}
	status := fota(t, dir, env, "status")
	if !strings.Contains(status, "in 1 session; deltas") || !strings.Contains(status, "deltas") || !strings.Contains(status, "saved") {
		t.Fatalf("fota status does not show the traffic:\n%s", status)
	}
	if dev := fota(t, dir, env, "device", "show", "--id", "delta-1"); !strings.Contains(dev, "chunks of a delta from") {
		t.Fatalf("device show does not say the session was a delta:\n%s", dev)
	}
	show := fota(t, dir, env, "rollout", "show", "1")
	if !strings.Contains(show, "on the wire: full images") {
		t.Fatalf("rollout show:\n%s", show)
	}
	metrics := srv.metrics(t)
	for _, want := range []string{`fota_update_bytes_total{artifact="delta"}`, `fota_update_bytes_total{artifact="full"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "fota_update_bytes"))
		}
	}
	t.Logf("%s", lineOf(status, "on the wire"))
	srv.stop(t)
}
