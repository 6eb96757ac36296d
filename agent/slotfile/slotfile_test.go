package slotfile

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ecowatt/fota/agent"
)

const testSlotSize = 64 << 10

func image(version string, fill byte, size int) ([]byte, agent.Image) {
	data := bytes.Repeat([]byte{fill}, size)
	return data, agent.Image{Version: version, Size: int64(size), SHA256: sha256.Sum256(data), SecurityCounter: uint32(fill)}
}

// device is a formatted device on a real folder; reboot reopens it.
type device struct {
	t    *testing.T
	dir  string
	disk Disk
}

func newDevice(t *testing.T) *device {
	d := &device{t: t, dir: t.TempDir()}
	osd, err := NewOSDisk(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	d.disk = osd
	factory, img := image("1.0.3", 1, 5000)
	if err := Format(osd, testSlotSize, factory, img); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) boot() (*Slots, agent.BootInfo) {
	d.t.Helper()
	s, err := Open(d.disk, testSlotSize, 3)
	if err != nil {
		d.t.Fatal(err)
	}
	bi, err := s.Boot()
	if err != nil {
		d.t.Fatal(err)
	}
	return s, bi
}

func install(t *testing.T, s *Slots, slot int, data []byte, img agent.Image) {
	t.Helper()
	if err := s.Erase(slot); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(slot, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(slot); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPending(slot, img); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateConfirm(t *testing.T) {
	d := newDevice(t)
	s, bi := d.boot()
	if bi.Slot != 0 || bi.Trial || bi.Image.Version != "1.0.3" {
		t.Fatalf("factory boot: %+v", bi)
	}
	data, img := image("1.0.4", 7, 9000)
	install(t, s, 1, data, img)
	s, bi = d.boot()
	if bi.Slot != 1 || !bi.Trial || bi.Attempts != 1 {
		t.Fatalf("first boot of new image: %+v", bi)
	}
	if err := s.Confirm(); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Status()
	if c, err := s.SecurityCounter(); err != nil || c != 7 || st.Slots[1].State != agent.ImageValid || st.Slots[0].State != agent.ImageValid {
		t.Fatalf("after confirm: %+v", st)
	}
	_, bi = d.boot()
	if bi.Slot != 1 || bi.Trial {
		t.Fatalf("boot after confirm: %+v", bi)
	}
}

func TestRejectRollsBack(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	data, img := image("1.0.5", 9, 3000)
	install(t, s, 1, data, img)
	s, bi := d.boot()
	if !bi.Trial {
		t.Fatal("new image not on trial")
	}
	if err := s.Reject("self-test failed"); err != nil {
		t.Fatal(err)
	}
	s, bi = d.boot()
	if bi.Slot != 0 || bi.Trial || bi.Rollback == nil || bi.Rollback.Version != "1.0.5" || bi.Rollback.Reason != "self-test failed" {
		t.Fatalf("boot after reject: %+v", bi)
	}
	st, _ := s.Status()
	if c, err := s.SecurityCounter(); err != nil || c != 1 || st.Slots[1].State != agent.ImageInvalid || len(st.Rejected) != 1 {
		t.Fatalf("status after rollback: %+v", st)
	}
	if err := s.AckRollback(); err != nil {
		t.Fatal(err)
	}
	if _, bi = d.boot(); bi.Rollback != nil {
		t.Fatal("acknowledged rollback reported again")
	}
	if err := s.Confirm(); !errors.Is(err, agent.ErrNotOnTrial) {
		t.Fatalf("confirming a valid image: %v", err)
	}
}

func TestUnconfirmedImageRollsBackAfterMaxBoots(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	data, img := image("1.0.6", 4, 3000)
	install(t, s, 1, data, img)
	for attempt := 1; attempt <= 3; attempt++ {
		_, bi := d.boot() // crashes before confirming: just boot again
		if bi.Slot != 1 || !bi.Trial || bi.Attempts != attempt {
			t.Fatalf("boot %d: %+v", attempt, bi)
		}
	}
	_, bi := d.boot()
	if bi.Slot != 0 || bi.Rollback == nil || !strings.Contains(bi.Rollback.Reason, "not confirmed within 3 boots") {
		t.Fatalf("fourth boot: %+v", bi)
	}
}

func TestDamagedImagesNeverBoot(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	data, img := image("1.0.4", 7, 9000)
	install(t, s, 1, data, img)
	// Flip one byte of the new image behind the slots' back.
	d.disk.WriteAt("slot1.bin", []byte{0}, 100)
	_, bi := d.boot()
	if bi.Slot != 0 || bi.Rollback == nil || !strings.Contains(bi.Rollback.Reason, "damaged") {
		t.Fatalf("damaged new image: %+v", bi)
	}
	// Both slots damaged: nothing boots, and it says so.
	d.disk.WriteAt("slot0.bin", []byte{0}, 10)
	s2, _ := Open(d.disk, testSlotSize, 3)
	if _, err := s2.Boot(); !errors.Is(err, agent.ErrNoBootable) {
		t.Fatalf("no good image: %v", err)
	}
}

func TestSlotRules(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	if err := s.WriteAt(0, []byte("x"), 0); !errors.Is(err, agent.ErrRunningSlot) {
		t.Errorf("write to running slot: %v", err)
	}
	if err := s.Erase(0); !errors.Is(err, agent.ErrRunningSlot) {
		t.Errorf("erase running slot: %v", err)
	}
	if err := s.Erase(1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, make([]byte, 10), testSlotSize-5); !errors.Is(err, agent.ErrImageTooLarge) {
		t.Errorf("write past the slot: %v", err)
	}
	data, img := image("1.0.4", 2, 100)
	install(t, s, 1, data, img)
	if err := s.WriteAt(1, []byte("x"), 0); err == nil {
		t.Error("write into a pending image without erase was accepted")
	}
	if err := s.Erase(2); err == nil {
		t.Error("slot 2 accepted")
	}
}

func TestOlderBootStateCopySurvivesCorruption(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	data, img := image("1.0.4", 7, 9000)
	install(t, s, 1, data, img)
	// Corrupt the newest copy (the pending-image record): the older copy
	// (factory image running) is used, which is a safe state.
	rec, _ := loadRecord(d.disk)
	newest := fmt.Sprintf("otadata.%d", rec.Seq%2)
	raw, _ := d.disk.ReadFile(newest)
	raw[5] ^= 0xFF
	os.WriteFile(filepath.Join(d.dir, newest), raw, 0o600)
	_, bi := d.boot()
	if bi.Slot != 0 || bi.Image.Version != "1.0.3" {
		t.Fatalf("boot with newest state corrupt: %+v", bi)
	}
	// Both copies corrupt: refuse with a clear error.
	for i := range 2 {
		os.WriteFile(filepath.Join(d.dir, fmt.Sprintf("otadata.%d", i)), []byte("garbage"), 0o600)
	}
	if _, err := Open(d.disk, testSlotSize, 3); !errors.Is(err, agent.ErrNoBootable) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("both copies corrupt: %v", err)
	}
}

func TestNVS(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	if _, err := s.LoadNVS("progress"); !errors.Is(err, agent.ErrNoValue) {
		t.Fatalf("absent: %v", err)
	}
	if err := s.SaveNVS("progress", []byte("chunk 12")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.LoadNVS("progress"); err != nil || string(v) != "chunk 12" {
		t.Fatalf("load: %q %v", v, err)
	}
	os.WriteFile(filepath.Join(d.dir, "nvs.progress"), []byte("chunk 13 plus a wrong checksum............"), 0o600)
	if _, err := s.LoadNVS("progress"); !errors.Is(err, agent.ErrNoValue) {
		t.Fatalf("corrupt value: %v", err)
	}
	if err := s.DeleteNVS("progress"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveNVS("../x", nil); err == nil {
		t.Fatal("path-like key accepted")
	}
}

// TestEveryCutDuringInstall cuts power at every persistent operation of an
// install (erase, write, sync, set pending), in each mode, and reboots: the
// device must always boot a verified image, old or new.
func TestEveryCutDuringInstall(t *testing.T) {
	data, img := image("1.0.4", 7, 9000)
	total := 0
	{ // count the operations of a clean install
		d := newDevice(t)
		s, _ := d.boot()
		fd := &FaultDisk{Inner: d.disk}
		s.disk = fd
		install(t, s, 1, data, img)
		total = fd.Ops()
	}
	for _, mode := range []CutMode{CutBefore, CutAfter, CutTorn} {
		for cut := 1; cut <= total; cut++ {
			d := newDevice(t)
			s, _ := d.boot()
			fd := &FaultDisk{Inner: d.disk, CutAt: cut, Mode: mode}
			s.disk = fd
			err := func() error {
				if err := s.Erase(1); err != nil {
					return err
				}
				if err := s.WriteAt(1, data, 0); err != nil {
					return err
				}
				if err := s.Sync(1); err != nil {
					return err
				}
				return s.SetPending(1, img)
			}()
			if !errors.Is(err, ErrPowerCut) {
				t.Fatalf("cut %d %s: install ended with %v", cut, mode, err)
			}
			s2, err := Open(d.disk, testSlotSize, 3)
			if err != nil {
				t.Fatalf("cut %d %s (%s): reopen: %v", cut, mode, fd.Log[len(fd.Log)-1], err)
			}
			bi, err := s2.Boot()
			if err != nil {
				t.Fatalf("cut %d %s (%s): bricked: %v", cut, mode, fd.Log[len(fd.Log)-1], err)
			}
			if v := bi.Image.Version; v != "1.0.3" && v != "1.0.4" {
				t.Fatalf("cut %d %s: booted %q", cut, mode, v)
			}
		}
	}
}

// noFree is a Disk that cannot tell its free space.
type noFree struct{ Disk }

// FreeFlash reports the free space of the folder's filesystem where the
// system tells it, through a FaultDisk too (without counting an
// operation, and not after the power is cut), and ErrUnsupported for a
// Disk that cannot tell.
func TestFreeFlash(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	free, err := s.FreeFlash()
	switch runtime.GOOS {
	case "linux", "darwin", "freebsd":
	default:
		// No statfs here (free_other.go): the inventory leaves it out.
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("free flash on %s: %d, %v; want ErrUnsupported", runtime.GOOS, free, err)
		}
		return
	}
	if err != nil || free <= 0 {
		t.Fatalf("free flash %d, %v", free, err)
	}
	fd := &FaultDisk{Inner: d.disk}
	fs, err := Open(fd, testSlotSize, 3)
	if err != nil {
		t.Fatal(err)
	}
	if free, err := fs.FreeFlash(); err != nil || free <= 0 || fd.Ops() != 0 {
		t.Fatalf("through a FaultDisk: %d, %v, %d operations", free, err, fd.Ops())
	}
	fd.CutAt = 1
	fd.Truncate("x", 0)
	if _, err := fs.FreeFlash(); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("after the cut: %v", err)
	}
	ns, err := Open(noFree{d.disk}, testSlotSize, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.FreeFlash(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a Disk without Free: %v", err)
	}
}
