package fota

import (
	"context"
	"encoding/hex"
	"io"
	"time"
)

// BlobStore keeps release ciphertexts, named by their SHA-256. Blobs are
// immutable once committed, which is what lets readers cache open files.
// Implementations: a folder (internal/blobdir) and PostgreSQL
// (internal/postgres).
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
	// Commit makes the blob readable as key, durably: it is on disk before
	// Commit returns.
	Commit(key string) error
	// Abort discards it.
	Abort()
}

// Blob is a committed blob: random access, known size.
type Blob interface {
	io.ReaderAt
	Size() int64
}

// SweepableBlobs is a BlobStore that can list what it holds.
type SweepableBlobs interface {
	BlobStore
	// Keys lists blobs committed before cutoff.
	Keys(cutoff time.Time) ([]string, error)
}

// ValidBlobKey reports whether key is a blob name: 64 hex digits.
func ValidBlobKey(key string) bool {
	if len(key) != 64 {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil
}

// SweepGrace is how old an unreferenced blob must be before a sweep takes
// it: replicas share blobs, and one may be between storing a blob and
// recording its release while another starts and sweeps.
const SweepGrace = 10 * time.Minute

// SweepBlobs removes blobs older than SweepGrace that no release refers
// to: what a crash between storing a blob and recording its release leaves.
func SweepBlobs(ctx context.Context, store ReleaseStore, blobs SweepableBlobs) (int, error) {
	return SweepBlobsBefore(ctx, store, blobs, time.Now().Add(-SweepGrace))
}

// SweepBlobsBefore is SweepBlobs with the cutoff given.
func SweepBlobsBefore(ctx context.Context, store ReleaseStore, blobs SweepableBlobs, cutoff time.Time) (int, error) {
	keys, err := blobs.Keys(cutoff)
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, k := range keys {
		inUse, err := store.BlobInUse(ctx, k)
		if err != nil {
			return removed, err
		}
		if !inUse {
			if err := blobs.Remove(k); err != nil {
				return removed, err
			}
			removed++
		}
	}
	return removed, nil
}
