package slotfile

import (
	"errors"
	"fmt"
	"sync"
)

// ErrPowerCut is what every operation returns once FaultDisk has cut power.
var ErrPowerCut = errors.New("power cut (simulated)")

// CutMode says how the cut operation itself behaves.
type CutMode int

const (
	CutBefore CutMode = iota // the operation does not happen
	CutAfter                 // the operation completes, then power goes
	CutTorn                  // a write lands half-way (other operations: as CutBefore)
)

func (m CutMode) String() string {
	return [...]string{"before", "after", "torn"}[m]
}

// FaultDisk wraps a Disk and cuts power at the Nth persistent operation
// (write, truncate, sync, rename, directory sync, remove), counting from 1.
// After the cut every call fails with ErrPowerCut, as a dead device would;
// reopening the slots on the inner Disk is the reboot.
type FaultDisk struct {
	Inner Disk
	CutAt int // 0: never
	Mode  CutMode

	mu   sync.Mutex
	ops  int
	dead bool
	Log  []string // the operations performed, for reports
}

// Ops returns how many persistent operations were attempted.
func (f *FaultDisk) Ops() int { f.mu.Lock(); defer f.mu.Unlock(); return f.ops }

// Dead reports whether power was cut.
func (f *FaultDisk) Dead() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.dead }

// step counts one operation and says whether to perform it and whether to
// die after it.
func (f *FaultDisk) step(desc string) (perform, torn, dieAfter bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return false, false, false, ErrPowerCut
	}
	f.ops++
	f.Log = append(f.Log, desc)
	if f.CutAt == 0 || f.ops != f.CutAt {
		return true, false, false, nil
	}
	f.dead = true
	switch f.Mode {
	case CutAfter:
		return true, false, true, nil
	case CutTorn:
		return false, true, true, nil
	}
	return false, false, true, nil
}

func (f *FaultDisk) alive() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return ErrPowerCut
	}
	return nil
}

func (f *FaultDisk) ReadFile(name string) ([]byte, error) {
	if err := f.alive(); err != nil {
		return nil, err
	}
	return f.Inner.ReadFile(name)
}

func (f *FaultDisk) ReadAt(name string, p []byte, off int64) (int, error) {
	if err := f.alive(); err != nil {
		return 0, err
	}
	return f.Inner.ReadAt(name, p, off)
}

func (f *FaultDisk) WriteAt(name string, p []byte, off int64) error {
	perform, torn, die, err := f.step(fmt.Sprintf("write %s @%d +%d", name, off, len(p)))
	if err != nil {
		return err
	}
	if torn {
		f.Inner.WriteAt(name, p[:len(p)/2], off)
	}
	if perform {
		if err := f.Inner.WriteAt(name, p, off); err != nil {
			return err
		}
	}
	if die {
		return ErrPowerCut
	}
	return nil
}

// do runs a non-write operation under the cut rules.
func (f *FaultDisk) do(desc string, op func() error) error {
	perform, _, die, err := f.step(desc)
	if err != nil {
		return err
	}
	if perform {
		if err := op(); err != nil {
			return err
		}
	}
	if die {
		return ErrPowerCut
	}
	return nil
}

func (f *FaultDisk) Truncate(name string, size int64) error {
	return f.do(fmt.Sprintf("truncate %s %d", name, size), func() error { return f.Inner.Truncate(name, size) })
}

func (f *FaultDisk) Sync(name string) error {
	return f.do("sync "+name, func() error { return f.Inner.Sync(name) })
}

func (f *FaultDisk) Rename(from, to string) error {
	return f.do("rename "+from+" "+to, func() error { return f.Inner.Rename(from, to) })
}

func (f *FaultDisk) SyncDir() error {
	return f.do("syncdir", f.Inner.SyncDir)
}

func (f *FaultDisk) Remove(name string) error {
	return f.do("remove "+name, func() error { return f.Inner.Remove(name) })
}

// Free asks the inner Disk: reading the free space is no persistent
// operation, and a dead device answers nothing.
func (f *FaultDisk) Free() (int64, error) {
	if err := f.alive(); err != nil {
		return 0, err
	}
	if fs, ok := f.Inner.(freeSpacer); ok {
		return fs.Free()
	}
	return 0, errors.ErrUnsupported
}
