package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ecowatt/fota/internal/atomicfile"
)

// BlobStore keeps release ciphertexts, named by their SHA-256. Blobs are
// immutable once committed, which is what lets readers cache open files.
type BlobStore interface {
	// Create returns a temporary blob to fill; Commit or Abort it.
	Create() (TempBlob, error)
	// Open returns the blob for reading. Errors wrap fs.ErrNotExist if absent.
	Open(key string) (Blob, error)
	// Remove deletes a committed blob.
	Remove(key string) error
}

// TempBlob is a blob being written.
type TempBlob interface {
	io.Writer
	// Commit makes the blob readable as key, durably.
	Commit(key string) error
	// Abort discards it.
	Abort()
}

// Blob is a committed blob: random access, known size.
type Blob interface {
	io.ReaderAt
	Size() int64
}

// DirBlobs is a BlobStore in a folder: one file per blob, temporary files
// in tmp/ so a crash leaves nothing half-visible.
type DirBlobs struct {
	dir string

	mu   sync.Mutex
	open map[string]*fileBlob // cached read handles; blobs never change
}

// NewDirBlobs uses (and creates) dir, removing temporary files a crash left.
func NewDirBlobs(dir string) (*DirBlobs, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("blob folder: %w", err)
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	for _, p := range stale {
		os.Remove(p)
	}
	return &DirBlobs{dir: dir, open: map[string]*fileBlob{}}, nil
}

// ValidBlobKey reports whether key names a blob: a hex SHA-256.
func ValidBlobKey(key string) bool {
	if len(key) != 64 {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil
}

type tempFile struct {
	f     *os.File
	store *DirBlobs
}

// Create starts a temporary blob.
func (d *DirBlobs) Create() (TempBlob, error) {
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
	if !ValidBlobKey(key) {
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
func (d *DirBlobs) Open(key string) (Blob, error) {
	if !ValidBlobKey(key) {
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
func (d *DirBlobs) Remove(key string) error {
	if !ValidBlobKey(key) {
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
func (d *DirBlobs) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, b := range d.open {
		b.Close()
		delete(d.open, k)
	}
	return nil
}

// Keys lists blobs committed before cutoff, for sweeping orphans.
func (d *DirBlobs) Keys(cutoff time.Time) ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	var keys []string
	for _, e := range entries {
		if e.IsDir() || !ValidBlobKey(e.Name()) {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}
