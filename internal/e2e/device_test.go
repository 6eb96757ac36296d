package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/logbuf"
)

// deviceProc is a `fota device run` process.
type deviceProc struct {
	cmd *exec.Cmd
	out *logbuf.Buffer
}

func startDevice(t *testing.T, dir, id, api string) *deviceProc {
	cmd := exec.Command(fotaBin, "device", "run", "--credentials", id+".json", "--keys-h", id+"_keys.h", "--state", filepath.Join("devices", id),
		"--version", "1.0.3", "--check-interval", "100ms", "--poll-interval", "20ms", "--upload-interval", "200ms", "--api", api)
	cmd.Dir = dir
	p := &deviceProc{cmd: cmd, out: &logbuf.Buffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevicesSurviveSIGKILL runs device processes against a server process,
// publishes a release, and kills each device with SIGKILL at random moments
// (a power cut), restarting it each time. Every restart must boot a valid
// image, and every device must end on the new version, confirmed.
func TestDevicesSurviveSIGKILL(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill schedule seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	fota(t, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "1MiB", "-o", "app.bin")
	fota(t, dir, nil, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	srv := startServer(t, dir)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	ids := []string{"kill-native", "kill-ecowatt", "kill-native-2"}
	apis := []string{"native", "ecowatt", "native"}
	for i, id := range ids {
		fota(t, dir, env, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3", "--api", apis[i],
			"--credentials", id+".json", "--keys-h", id+"_keys.h", "--keys", "keys")
	}
	fota(t, dir, env, "release", "publish", "--rollout", "all", "app.fota")

	var wg sync.WaitGroup
	logs := make([]string, len(ids))
	kills := make([]int, len(ids))
	for i, id := range ids {
		delays := make([]time.Duration, 4)
		for k := range delays {
			delays[k] = time.Duration(30+rng.IntN(400)) * time.Millisecond
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var all strings.Builder
			for _, d := range delays {
				p := startDevice(t, dir, id, apis[i])
				time.Sleep(d)
				p.cmd.Process.Signal(syscall.SIGKILL)
				p.cmd.Wait()
				kills[i]++
				fmt.Fprintf(&all, "--- killed after %s ---\n%s", d, p.out)
			}
			// Power stays on now: let it finish.
			p := startDevice(t, dir, id, apis[i])
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) && !strings.Contains(p.out.String(), "confirmed (running 1.0.4)") &&
				!strings.Contains(p.out.String(), "boot (running 1.0.4) slot 1, normal") {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond) // normal work: polls and an upload
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
			all.WriteString("--- last run ---\n" + p.out.String())
			logs[i] = all.String()
		}()
	}
	wg.Wait()

	list := fota(t, dir, env, "device", "list")
	for i, id := range ids {
		log := logs[i]
		if strings.Contains(log, "bricked") || strings.Contains(log, "no bootable image") {
			t.Fatalf("%s bricked:\n%s", id, log)
		}
		// Every power-up booted a verified image, 1.0.3 or 1.0.4.
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, ": boot (running") && !strings.Contains(line, "running 1.0.3") && !strings.Contains(line, "running 1.0.4") {
				t.Fatalf("%s booted something else: %s", id, line)
			}
		}
		var row string
		for _, l := range strings.Split(list, "\n") {
			if strings.HasPrefix(l, id+" ") {
				row = l
			}
		}
		if !strings.Contains(row, "1.0.4") {
			t.Fatalf("%s did not end on 1.0.4 after %d kills (server says %q):\n%s", id, kills[i], row, log)
		}
		if _, err := os.Stat(filepath.Join(dir, "devices", id, "uploads.jsonl")); err != nil {
			t.Errorf("%s uploaded no readings: %v", id, err)
		}
	}
	srv.stop(t)
}
