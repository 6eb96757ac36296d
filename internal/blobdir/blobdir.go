// Package blobdir is a fota.BlobStore in a folder: one file per release
// ciphertext, named by its SHA-256, written to tmp/ and renamed when
// complete, so a crash leaves nothing half-visible.
package blobdir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/atomicfile"
)

// Dir is a fota.BlobStore in a folder.
type Dir struct {
	dir string

	mu   sync.Mutex
	open map[string]*fileBlob // cached read handles; blobs never change
}

// New uses (and creates) dir, removing temporary files a crash left.
func New(dir string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("blob folder: %w", err)
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	for _, p := range stale {
		os.Remove(p)
	}
	return &Dir{dir: dir, open: map[string]*fileBlob{}}, nil
}

type tempFile struct {
	f     *os.File
	store *Dir
}

// Create starts a temporary blob.
func (d *Dir) Create() (fota.TempBlob, error) {
	var name [8]byte
	rand.Read(name[:])
	f, err := os.OpenFile(filepath.Join(d.dir, "tmp", hex.EncodeToString(name[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create blob: %w", err)
	}
	return &tempFile{f: f, store: d}, nil
}

func (t *tempFile) Write(p []byte) (int, error) { return t.f.Write(p) }

func (t *tempFile) Commit(key string) error {
	if !fota.ValidBlobKey(key) {
		t.Abort()
		return fmt.Errorf("commit blob: bad key %q", key)
	}
	if err := t.f.Sync(); err != nil {
		t.Abort()
		return fmt.Errorf("commit blob: %w", err)
	}
	if err := t.f.Close(); err != nil {
		t.Abort()
		return fmt.Errorf("commit blob: %w", err)
	}
	final := filepath.Join(t.store.dir, key)
	if err := os.Rename(t.f.Name(), final); err != nil {
		os.Remove(t.f.Name())
		return fmt.Errorf("commit blob: %w", err)
	}
	return atomicfile.SyncDir(t.store.dir)
}

func (t *tempFile) Abort() {
	t.f.Close()
	os.Remove(t.f.Name())
}

type fileBlob struct {
	*os.File
	size int64
}

func (b *fileBlob) Size() int64 { return b.size }

// Open returns a cached handle to a committed blob.
func (d *Dir) Open(key string) (fota.Blob, error) {
	if !fota.ValidBlobKey(key) {
		return nil, fmt.Errorf("open blob %q: %w", key, fs.ErrNotExist)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.open[key]; ok {
		return b, nil
	}
	f, err := os.Open(filepath.Join(d.dir, key))
	if err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open blob: %w", err)
	}
	b := &fileBlob{File: f, size: st.Size()}
	d.open[key] = b
	return b, nil
}

// Remove deletes a blob and drops its cached handle.
func (d *Dir) Remove(key string) error {
	if !fota.ValidBlobKey(key) {
		return fmt.Errorf("remove blob %q: bad key", key)
	}
	d.mu.Lock()
	if b, ok := d.open[key]; ok {
		b.Close()
		delete(d.open, key)
	}
	d.mu.Unlock()
	if err := os.Remove(filepath.Join(d.dir, key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob: %w", err)
	}
	return nil
}

// Close releases cached handles.
func (d *Dir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, b := range d.open {
		b.Close()
		delete(d.open, k)
	}
	return nil
}

// Keys lists blobs committed before cutoff, for sweeping orphans.
func (d *Dir) Keys(cutoff time.Time) ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if e.IsDir() || !fota.ValidBlobKey(e.Name()) {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}

var _ fota.SweepableBlobs = (*Dir)(nil)
