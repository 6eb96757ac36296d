package cclient_test

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/keys"
)

// TestVectors runs fota-vectors: the C client's request signing, chunk
// MACs, SemVer, times and bundle handling against the Go packages' vectors.
func TestVectors(t *testing.T) {
	dir := build(t)
	root := filepath.Join(srcDir(t), "..", "..")
	out, err := exec.Command(filepath.Join(dir, "fota-vectors"), filepath.Join(root, "protocol", "testdata", "vectors"),
		filepath.Join(root, "bundle", "testdata", "vectors")).CombinedOutput()
	if err != nil {
		t.Fatalf("fota-vectors: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("ok ")) {
		t.Fatalf("fota-vectors said:\n%s", out)
	}
	t.Logf("%s", out)
}

const slotSize = 1 << 20

// TestUpdate: the C client updates from 1.0.3 to 1.0.4 over the native API,
// confirms it on the next boot, and the server hears every step.
func TestUpdate(t *testing.T) {
	srv := testserver.New(t)
	img := srv.Sample("1.0.4", firmware.Healthy, 200<<10, 1)
	srv.Publish(srv.Bundle("1.0.4", img, 0, 1))
	d := newCDev(t, srv, "c1", slotSize, 0)
	if code := d.powerOn(); code != exitReboot {
		t.Fatalf("first power-on: exit %d, want %d (installed):\n%s%s", code, exitReboot, d.stdout, d.stderr)
	}
	if !strings.Contains(d.stdout, "installed=1") {
		t.Fatalf("no install in:\n%s", d.stdout)
	}
	if code := d.powerOn(); code != exitIdle {
		t.Fatalf("second power-on: exit %d:\n%s%s", code, d.stdout, d.stderr)
	}
	b, _ := d.boot()
	if b.version != "1.0.4" || !b.trial {
		t.Fatalf("second boot ran %+v, want 1.0.4 on trial", b)
	}
	if !bytes.HasPrefix(d.slot(b.slot), img) {
		t.Fatal("the slot does not hold the released image")
	}
	d.powerOn()
	if b, _ := d.boot(); b.version != "1.0.4" || b.trial || b.counter != 1 {
		t.Fatalf("third boot %+v, want 1.0.4 confirmed with counter 1", b)
	}
	evs := strings.Join(srv.Events("c1"), ", ")
	for _, want := range []string{"session-opened 1.0.4", "downloaded 1.0.4", "verified 1.0.4", "applied 1.0.4", "confirmed 1.0.4"} {
		if !strings.Contains(evs, want) {
			t.Fatalf("server events lack %q: %s", want, evs)
		}
	}
	dev, err := srv.Admin.Device(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if dev.Device.Version != "1.0.4" || dev.Device.Inventory == nil || !strings.HasPrefix(dev.Device.Inventory.AgentVersion, "fota-c/") ||
		dev.Device.Inventory.SlotSize != slotSize {
		t.Fatalf("server's record of the device: %+v %+v", dev.Device, dev.Device.Inventory)
	}
}

// TestSelfTestFailureRollsBack: an image failing its self-test is rolled
// back on the next boot, the server hears it, and the device refuses it after.
func TestSelfTestFailureRollsBack(t *testing.T) {
	srv := testserver.New(t)
	srv.Publish(srv.Bundle("1.0.4", srv.Sample("1.0.4", firmware.FailSelfTest, 64<<10, 0), 0, 0))
	d := newCDev(t, srv, "c1", slotSize, 0)
	if code := d.powerOn(); code != exitReboot {
		t.Fatalf("install: exit %d:\n%s%s", code, d.stdout, d.stderr)
	}
	if code := d.powerOn(); code != exitReboot {
		t.Fatalf("first boot of the failing image: exit %d, want a reboot:\n%s%s", code, d.stdout, d.stderr)
	}
	d.powerOn()
	if b, _ := d.boot(); b.version != "1.0.3" || b.trial {
		t.Fatalf("after the rollback: %+v\n%s", b, d.stderr)
	}
	evs := strings.Join(srv.Events("c1"), ", ")
	if !strings.Contains(evs, "rolled-back 1.0.4") || strings.Contains(evs, "confirmed") {
		t.Fatalf("server events: %s", evs)
	}
	// The server no longer offers it; were it offered, the device refuses it.
	if code := d.powerOn(); code != exitIdle {
		t.Fatalf("after the rollback a check: exit %d:\n%s%s", code, d.stdout, d.stderr)
	}
}

// TestResumeAfterSIGKILL kills the device at random moments of a 2 MiB
// download; each power-on resumes near where it stopped, and the update
// completes and confirms.
func TestResumeAfterSIGKILL(t *testing.T) {
	srv := testserver.New(t)
	img := srv.Sample("1.0.4", firmware.Healthy, 2<<20, 0)
	srv.Publish(srv.Bundle("1.0.4", img, 0, 0))
	d := newCDev(t, srv, "c1", 4<<20, 0)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	kills, resumes := 0, 0
	installed := false
	var ends []string
	for i := 0; i < 40; i++ {
		cmd := exec.Command(d.bin, d.runArgs("-v")...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Duration(20+rng.IntN(200)) * time.Millisecond):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			kills++
		}
		if strings.Contains(errb.String(), "resuming 1.0.4 at chunk") {
			resumes++
		}
		d.stdout, d.stderr = out.String(), errb.String()
		// Installed: said so, or killed after marking the slot and before
		// saying it, so this power-on booted the new image.
		if b, _ := d.boot(); strings.Contains(d.stdout, "installed=1") || b.version == "1.0.4" {
			installed = true
			break
		}
		if code := cmd.ProcessState.ExitCode(); code >= 0 && code != exitIdle && code != exitError {
			t.Fatalf("run %d: exit %d\n%s%s", i, code, d.stdout, d.stderr)
		}
		if code := cmd.ProcessState.ExitCode(); code >= 0 {
			ends = append(ends, fmt.Sprintf("%d:%s", code, d.errorCode()))
		}
	}
	if !installed {
		t.Fatalf("not installed after %d kills (runs that ended by themselves: %v); the last:\n%s%s", kills, ends, d.stdout, d.stderr)
	}
	d.settle(map[string][]byte{"1.0.4": img, factoryVersion: factoryImage(t, 0)})
	if b, _ := d.boot(); b.version != "1.0.4" {
		t.Fatalf("ended on %s", b.version)
	}
	if !strings.Contains(strings.Join(srv.Events("c1"), ","), "confirmed 1.0.4") {
		t.Fatalf("server never heard the confirm: %v", srv.Events("c1"))
	}
	if kills >= 2 && resumes == 0 { // one early kill may come before the first checkpoint
		t.Fatalf("%d kills and no power-on resumed the download", kills)
	}
	t.Logf("%d kills, %d resumed downloads", kills, resumes)
}

// -sweep=full sweeps a larger image; the default is a 12 KiB image, whose
// few hundred power-ons take seconds.
var sweepMode = flag.String("sweep", "quick", "power-cut sweep size: quick or full")

var sweepModes = []string{"before", "after", "torn", "corrupt-state"}

// TestPowerCutSweep cuts power at every persistent operation of an update
// (install, then first boot), in the four modes of the Go agent's sweep,
// for an image that passes its self-test and one that fails it. After
// each cut the device is powered on until it settles: it must never be
// bricked, boot only signed images, and end where the server says it is.
func TestPowerCutSweep(t *testing.T) {
	size := 12 << 10
	if *sweepMode == "full" {
		size = 256 << 10
	}
	for _, b := range []firmware.Behaviour{firmware.Healthy, firmware.FailSelfTest} {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel() // each power-on is a process; two cores take two at once
			srv := testserver.New(t)
			img := srv.Sample("1.0.4", b, size, 1)
			srv.Publish(srv.Bundle("1.0.4", img, 0, 1))
			images := map[string][]byte{"1.0.4": img, factoryVersion: factoryImage(t, 0)}
			want, wantCounter, wantEvent := "1.0.4", uint32(1), "confirmed 1.0.4"
			if b == firmware.FailSelfTest {
				want, wantCounter, wantEvent = factoryVersion, 0, "rolled-back 1.0.4"
			}
			// Count each phase's persistent operations on a clean run.
			probe := newCDev(t, srv, "probe", slotSize, 0)
			var counts []int
			for phase := 0; phase < 2; phase++ {
				probe.powerOn()
				if probe.ops() <= 0 {
					t.Fatalf("phase %d: no op count:\n%s", phase, probe.stderr)
				}
				counts = append(counts, probe.ops())
			}
			cuts, n := 0, 0
			for phase, count := range counts {
				for cut := 1; cut <= count; cut++ {
					for _, mode := range sweepModes {
						n++
						d := newCDev(t, srv, fmt.Sprintf("d%d", n), slotSize, 0)
						for p := 0; p < phase; p++ {
							if code := d.powerOn(); code != exitReboot {
								t.Fatalf("phase %d before the cut: exit %d\n%s%s", p, code, d.stdout, d.stderr)
							}
						}
						cutMode := mode
						if mode == "corrupt-state" {
							cutMode = "after"
						}
						code := d.powerOn("--cut-at", fmt.Sprint(cut), "--cut-mode", cutMode)
						where := fmt.Sprintf("phase %d cut %d %s", phase, cut, mode)
						if code != exitPowerCut {
							// The run ended before op cut (a phase may do fewer ops when cut earlier runs differ): fine.
							if code != exitReboot && code != exitIdle {
								t.Fatalf("%s: exit %d\n%s%s", where, code, d.stdout, d.stderr)
							}
						}
						if mode == "corrupt-state" {
							corruptNewestState(t, d.dir)
						}
						d.settle(images)
						cuts++
						final, _ := d.boot()
						if final.version != want || final.counter != wantCounter {
							t.Fatalf("%s: ended on %s with counter %d, want %s with %d\n%s%s", where, final.version,
								final.counter, want, wantCounter, d.stdout, d.stderr)
						}
						if evs := strings.Join(srv.Events(d.id), ", "); !strings.Contains(evs, wantEvent) {
							t.Fatalf("%s: the server never heard %q: %s", where, wantEvent, evs)
						}
					}
				}
			}
			t.Logf("%d power cuts over %d+%d operations, 0 bricks", cuts, counts[0], counts[1])
		})
	}
}

// corruptNewestState flips a byte inside the body of the newest boot-state
// copy, keeping its checksum, as failing flash would.
func corruptNewestState(t *testing.T, dir string) {
	best, bestSeq := "", int64(-1)
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("otadata.%d", i))
		data, err := os.ReadFile(p)
		if err != nil || len(data) < otadataSeqOffset+4 {
			continue
		}
		seq := int64(data[otadataSeqOffset]) | int64(data[otadataSeqOffset+1])<<8 | int64(data[otadataSeqOffset+2])<<16 | int64(data[otadataSeqOffset+3])<<24
		if seq > bestSeq {
			best, bestSeq = p, seq
		}
	}
	if best == "" {
		t.Fatal("no boot state to corrupt")
	}
	data, _ := os.ReadFile(best)
	data[otadataSeqOffset+5] ^= 0x01
	if err := os.WriteFile(best, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// otadataSeqOffset is where a boot-state copy keeps its sequence number
// (ports/posix/fota_port_posix.h).
const otadataSeqOffset = 8

// TestUpdateECDSA: a release signed with ECDSA P-256 updates the C client
// as an RSA one does.
func TestUpdateECDSA(t *testing.T) {
	srv := testserver.NewAlg(t, keys.AlgECDSA)
	img := srv.Sample("1.0.4", firmware.Healthy, 64<<10, 0)
	srv.Publish(srv.Bundle("1.0.4", img, 0, 0))
	d := newCDev(t, srv, "c1", slotSize, 0)
	if code := d.powerOn(); code != exitReboot {
		t.Fatalf("exit %d:\n%s%s", code, d.stdout, d.stderr)
	}
	d.settle(map[string][]byte{"1.0.4": img, factoryVersion: factoryImage(t, 0)})
	if b, _ := d.boot(); b.version != "1.0.4" {
		t.Fatalf("ended on %s", b.version)
	}
}

// TestEd25519KeyRefused: mbedtls has no Ed25519, so a device given an
// Ed25519 release key refuses to start its client, saying why, rather than
// take updates it cannot check.
func TestEd25519KeyRefused(t *testing.T) {
	srv := testserver.NewAlg(t, keys.AlgEd25519)
	srv.Publish(srv.Bundle("1.0.4", srv.Sample("1.0.4", firmware.Healthy, 16<<10, 0), 0, 0))
	d := newCDev(t, srv, "c1", slotSize, 0)
	if code := d.powerOn(); code != exitError || d.errorCode() != "FOTA_ERR_UNSUPPORTED" || !strings.Contains(d.stderr, "Ed25519") {
		t.Fatalf("exit %d, %q:\n%s%s", code, d.errorCode(), d.stdout, d.stderr)
	}
	if evs := strings.Join(srv.Events("c1"), ", "); strings.Contains(evs, "session-opened") {
		t.Fatalf("the device checked in: %s", evs)
	}
}

// TestOneProcessPerDevice: a second process on a device's state folder is
// refused while the first runs, and can start once it has gone.
func TestOneProcessPerDevice(t *testing.T) {
	srv := testserver.New(t)
	d := newCDev(t, srv, "c1", slotSize, 0)
	loop := slices.DeleteFunc(d.runArgs("--check-interval", "3600"), func(a string) bool { return a == "--once" })
	first := exec.Command(d.bin, loop...)
	stdout, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	checked := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "result ") {
				close(checked)
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case <-checked:
	case <-time.After(10 * time.Second):
		t.Fatal("the first process never checked")
	}
	if code := d.powerOn(); code != exitError || !strings.Contains(d.stderr, "in use by another process") {
		t.Fatalf("second process: exit %d\n%s%s", code, d.stdout, d.stderr)
	}
	first.Process.Kill()
	first.Wait()
	if code := d.powerOn(); code != exitIdle {
		t.Fatalf("after the first ended: exit %d\n%s%s", code, d.stdout, d.stderr)
	}
}
