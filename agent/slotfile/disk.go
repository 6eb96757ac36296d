package slotfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Disk is the storage under the slots: named files written in place, like
// flash partitions, plus the rename that makes small records atomic. Every
// mutating method is one "persistent operation" that FaultDisk can cut.
type Disk interface {
	ReadFile(name string) ([]byte, error)
	ReadAt(name string, p []byte, off int64) (int, error)
	WriteAt(name string, p []byte, off int64) error
	Truncate(name string, size int64) error
	Sync(name string) error
	Rename(from, to string) error
	SyncDir() error
	Remove(name string) error
}

// OSDisk is a Disk in a folder of the real filesystem.
type OSDisk struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
}

// NewOSDisk uses (and creates) dir.
func NewOSDisk(dir string) (*OSDisk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("device storage: %w", err)
	}
	return &OSDisk{dir: dir, files: map[string]*os.File{}}, nil
}

func (d *OSDisk) file(name string) (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.files[name]; ok {
		return f, nil
	}
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	d.files[name] = f
	return f, nil
}

func (d *OSDisk) forget(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.files[name]; ok {
		f.Close()
		delete(d.files, name)
	}
}

// ReadFile reads a whole file; a missing one wraps fs.ErrNotExist.
func (d *OSDisk) ReadFile(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.dir, name))
}

// ReadAt reads from a file; past the end it returns io.EOF.
func (d *OSDisk) ReadAt(name string, p []byte, off int64) (int, error) {
	if _, err := os.Stat(filepath.Join(d.dir, name)); err != nil {
		return 0, err
	}
	f, err := d.file(name)
	if err != nil {
		return 0, err
	}
	return f.ReadAt(p, off)
}

// WriteAt writes in place, creating the file if needed.
func (d *OSDisk) WriteAt(name string, p []byte, off int64) error {
	f, err := d.file(name)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(p, off)
	return err
}

// Truncate sets a file's size, creating it if needed.
func (d *OSDisk) Truncate(name string, size int64) error {
	f, err := d.file(name)
	if err != nil {
		return err
	}
	return f.Truncate(size)
}

// Sync flushes a file.
func (d *OSDisk) Sync(name string) error {
	f, err := d.file(name)
	if err != nil {
		return err
	}
	return f.Sync()
}

// Rename replaces to with from.
func (d *OSDisk) Rename(from, to string) error {
	d.forget(from)
	d.forget(to)
	return os.Rename(filepath.Join(d.dir, from), filepath.Join(d.dir, to))
}

// SyncDir makes renames durable.
func (d *OSDisk) SyncDir() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Remove deletes a file; a missing one is not an error.
func (d *OSDisk) Remove(name string) error {
	d.forget(name)
	if err := os.Remove(filepath.Join(d.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Close releases open files.
func (d *OSDisk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, f := range d.files {
		f.Close()
		delete(d.files, n)
	}
	return nil
}

// replaceFile writes a small record atomically: temporary file, sync,
// rename over the old one, sync the folder. A cut anywhere leaves the old
// record or the new one.
func replaceFile(d Disk, name string, data []byte) error {
	tmp := name + ".tmp"
	if err := d.Truncate(tmp, 0); err != nil {
		return err
	}
	if err := d.WriteAt(tmp, data, 0); err != nil {
		return err
	}
	if err := d.Sync(tmp); err != nil {
		return err
	}
	if err := d.Rename(tmp, name); err != nil {
		return err
	}
	return d.SyncDir()
}
