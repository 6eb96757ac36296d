package slotfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecowatt/fota/agent"
)

// counter reads the security counter as the agent does, failing the test
// when it cannot be read.
func counter(t *testing.T, s *Slots) uint32 {
	t.Helper()
	c, err := s.SecurityCounter()
	if err != nil {
		t.Fatalf("security counter: %v", err)
	}
	return c
}

// confirmImage installs and confirms an image with the given counter, and
// returns the slots of the boot after the confirm.
func (d *device) confirmImage(s *Slots, version string, counter uint32) *Slots {
	d.t.Helper()
	data, img := image(version, byte(counter), 3000)
	bi, _ := s.Status()
	install(d.t, s, agent.Other(bi.Running), data, img)
	s, _ = d.boot()
	if err := s.Confirm(); err != nil {
		d.t.Fatal(err)
	}
	s, _ = d.boot()
	return s
}

func (d *device) damage(name string) {
	d.t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.dir, name))
	if err != nil {
		d.t.Fatal(err)
	}
	raw[2] ^= 0x40 // inside the body, so the stored checksum no longer matches
	if err := os.WriteFile(filepath.Join(d.dir, name), raw, 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func TestCounterOnlyRises(t *testing.T) {
	d := newDevice(t)
	s, _ := d.boot()
	if c := counter(t, s); c != 1 {
		t.Fatalf("after format: %d, want the factory image's 1", c)
	}
	s = d.confirmImage(s, "1.0.4", 7)
	if c := counter(t, s); c != 7 {
		t.Fatalf("after confirming counter 7: %d", c)
	}
	// A later image with a lower counter (the agent refuses those; the
	// record must hold even if one got through) does not lower it.
	s = d.confirmImage(s, "1.0.5", 3)
	if c := counter(t, s); c != 7 {
		t.Fatalf("after confirming counter 3: %d, want 7", c)
	}
	s = d.confirmImage(s, "1.0.6", 9)
	if c := counter(t, s); c != 9 {
		t.Fatalf("after confirming counter 9: %d", c)
	}
}

// TestCounterDamagedCopies: a damaged copy never reads lower; damage to
// both reads as unreadable, never as 0; the boot step repairs one copy.
func TestCounterDamagedCopies(t *testing.T) {
	for _, tc := range []struct {
		damaged []int
		want    uint32 // 0: unreadable
	}{
		{[]int{0}, 7},
		{[]int{1}, 7},
		{[]int{0, 1}, 0},
	} {
		t.Run(fmt.Sprint(tc.damaged), func(t *testing.T) {
			d := newDevice(t)
			s, _ := d.boot()
			d.confirmImage(s, "1.0.4", 7)
			for _, c := range tc.damaged {
				d.damage(counterFile(c))
			}
			s, _ = d.boot() // boots despite the damage
			c, err := s.SecurityCounter()
			if tc.want == 0 {
				if !errors.Is(err, agent.ErrCounterUnreadable) {
					t.Fatalf("both copies damaged: %d, %v; want ErrCounterUnreadable", c, err)
				}
				// Nothing raises it back from a guess: not a confirm, not a format.
				s = d.confirmImage(s, "1.0.5", 9)
				if _, err := s.SecurityCounter(); !errors.Is(err, agent.ErrCounterUnreadable) {
					t.Fatalf("after a confirm: %v; want still unreadable", err)
				}
				return
			}
			if err != nil || c != tc.want {
				t.Fatalf("read %d, %v; want %d", c, err, tc.want)
			}
			// The boot rewrote the damaged copy: both are intact again.
			if st := readCounter(d.disk); !st.healthy || st.value != 7 {
				t.Fatalf("after the boot: %+v, want both copies at 7", st)
			}
		})
	}
}

// TestCounterCutDuringConfirm cuts power at every operation of a confirm
// that raises the counter from 1 to 7, in every mode: after the reboot the
// counter is 7 if the image is valid, 1 if it is still on trial, and
// never anything else; the record is whole again after the boot.
func TestCounterCutDuringConfirm(t *testing.T) {
	data, img := image("1.0.4", 7, 9000)
	prepare := func() (*device, *Slots) {
		d := newDevice(t)
		s, _ := d.boot()
		install(t, s, 1, data, img)
		s, _ = d.boot()
		return d, s
	}
	total := 0
	{
		_, s := prepare()
		fd := &FaultDisk{Inner: s.disk}
		s.disk = fd
		if err := s.Confirm(); err != nil {
			t.Fatal(err)
		}
		total = fd.Ops()
	}
	if total < 15 { // 5 for the boot state, 5 for each counter copy
		t.Fatalf("a confirm took %d operations; the counter's copies are not written", total)
	}
	for _, mode := range []CutMode{CutBefore, CutAfter, CutTorn} {
		for cut := 1; cut <= total; cut++ {
			d, s := prepare()
			fd := &FaultDisk{Inner: s.disk, CutAt: cut, Mode: mode}
			s.disk = fd
			if err := s.Confirm(); !errors.Is(err, ErrPowerCut) {
				t.Fatalf("cut %d %s: confirm ended with %v", cut, mode, err)
			}
			where := fmt.Sprintf("cut %d %s (%s)", cut, mode, fd.Log[len(fd.Log)-1])
			if st := readCounter(d.disk); st.err != nil || st.value != 1 && st.value != 7 {
				t.Fatalf("%s: on disk %+v, want 1 or 7", where, st)
			}
			s, bi := d.boot()
			want := uint32(1)
			if !bi.Trial {
				want = 7
			}
			if c := counter(t, s); c != want || bi.Image.Version != "1.0.4" {
				t.Fatalf("%s: booted %s (trial %v) with counter %d, want %d", where, bi.Image.Version, bi.Trial, c, want)
			}
			if !bi.Trial {
				if st := readCounter(d.disk); !st.healthy {
					t.Fatalf("%s: record not repaired by the boot: %+v", where, st)
				}
			}
		}
	}
}

// TestFormatKeepsCounter: formatting a device whose boot state is lost
// keeps its counter, raises it to a higher factory counter, and leaves an
// unreadable one unreadable.
func TestFormatKeepsCounter(t *testing.T) {
	loseBootState := func(d *device) {
		for i := range 2 {
			os.WriteFile(filepath.Join(d.dir, fmt.Sprintf("otadata.%d", i)), []byte("garbage"), 0o600)
		}
	}
	for _, tc := range []struct {
		name           string
		factoryCounter uint32
		damageCounter  bool
		want           uint32 // 0: unreadable
	}{
		{"factory counter below", 1, false, 7},
		{"factory counter above", 9, false, 9},
		{"counter unreadable", 1, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t)
			s, _ := d.boot()
			d.confirmImage(s, "1.0.4", 7)
			loseBootState(d)
			if tc.damageCounter {
				d.damage(counterFile(0))
				d.damage(counterFile(1))
			}
			factory, img := image("1.0.3", byte(tc.factoryCounter), 5000)
			if err := Format(d.disk, testSlotSize, factory, img); err != nil {
				t.Fatal(err)
			}
			s, bi := d.boot()
			if bi.Image.Version != "1.0.3" {
				t.Fatalf("booted %s after the format", bi.Image.Version)
			}
			c, err := s.SecurityCounter()
			if tc.want == 0 {
				if !errors.Is(err, agent.ErrCounterUnreadable) {
					t.Fatalf("counter %d, %v; want still unreadable", c, err)
				}
				return
			}
			if err != nil || c != tc.want {
				t.Fatalf("counter %d, %v; want %d", c, err, tc.want)
			}
		})
	}
}

// TestLegacyCounterMoves: a device formatted before the counter had its own
// record kept it in the boot state; the boot step moves it over, so that
// losing that boot state later does not lose the counter.
func TestLegacyCounterMoves(t *testing.T) {
	d := newDevice(t)
	for i := range 2 {
		os.Remove(filepath.Join(d.dir, counterFile(i)))
	}
	rec, err := loadRecord(d.disk)
	if err != nil {
		t.Fatal(err)
	}
	rec.LegacyCounter, rec.Seq = 5, rec.Seq+1
	if err := saveRecord(d.disk, &rec); err != nil {
		t.Fatal(err)
	}
	s, _ := d.boot()
	if c := counter(t, s); c != 5 {
		t.Fatalf("after the boot: %d, want the legacy 5", c)
	}
	if st := readCounter(d.disk); !st.healthy || st.value != 5 {
		t.Fatalf("record after the boot: %+v", st)
	}
}
