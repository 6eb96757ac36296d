package postgres

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func putBlob(t *testing.T, b *Blobs, data []byte) string {
	t.Helper()
	tmp, err := b.Create()
	if err != nil {
		t.Fatal(err)
	}
	// Odd-sized writes, so pieces fill across Write calls.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7777)
		if _, err := tmp.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:])
	if err := tmp.Commit(key); err != nil {
		t.Fatal(err)
	}
	return key
}

// A blob spanning several pieces reads back exactly, at any offset,
// including reads that cross a piece boundary and reads past the end.
func TestBlobsRoundTrip(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	b := s.Blobs(PieceSize) // a one-piece cache: evictions happen
	data := make([]byte, 2*PieceSize+12345)
	rand.Read(data)
	key := putBlob(t, b, data)

	blob, err := b.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	if blob.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", blob.Size(), len(data))
	}
	for _, off := range []int64{0, 1024, PieceSize - 100, PieceSize, 2*PieceSize - 1, int64(len(data)) - 1024} {
		buf := make([]byte, 1024)
		if n, err := blob.ReadAt(buf, off); err != nil || n != 1024 {
			t.Fatalf("ReadAt %d: %d, %v", off, n, err)
		}
		if !bytes.Equal(buf, data[off:off+1024]) {
			t.Fatalf("ReadAt %d: wrong bytes", off)
		}
	}
	all, err := io.ReadAll(io.NewSectionReader(blob, 0, blob.Size()))
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("whole blob differs (%v)", err)
	}
	buf := make([]byte, 100)
	if n, err := blob.ReadAt(buf, int64(len(data))-10); n != 10 || err != io.EOF {
		t.Fatalf("read past end: %d, %v; want 10, EOF", n, err)
	}

	// A second store (another replica) sees the same blob.
	other := s.Blobs(DefaultPieceCache)
	blob2, err := other.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blob2.ReadAt(buf, PieceSize); err != nil || !bytes.Equal(buf, data[PieceSize:PieceSize+100]) {
		t.Fatalf("other replica reads wrong bytes (%v)", err)
	}
}

// Committing the same content twice keeps one blob; an aborted or never
// committed blob is invisible; a removed one is gone.
func TestBlobsCommitAbortRemove(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	b := s.Blobs(DefaultPieceCache)
	data := []byte("firmware ciphertext")
	key := putBlob(t, b, data)
	if again := putBlob(t, b, data); again != key {
		t.Fatal("same content, different key")
	}
	var rows int
	s.pool.QueryRow(t.Context(), `SELECT count(*) FROM blobs`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d blob rows after committing the same content twice, want 1", rows)
	}

	tmp, _ := b.Create()
	tmp.Write(make([]byte, PieceSize+1))
	tmp.Abort()
	var pieces int
	s.pool.QueryRow(t.Context(), `SELECT count(*) FROM blob_pieces`).Scan(&pieces)
	if pieces != 1 {
		t.Fatalf("%d pieces after abort, want the 1 of the committed blob", pieces)
	}

	if err := (func() error { tmp, _ := b.Create(); return tmp.Commit("not-a-hash") })(); err == nil {
		t.Fatal("a bad key committed")
	}

	if err := b.Remove(key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open removed blob: %v, want fs.ErrNotExist", err)
	}
}

// Keys lists only committed blobs older than the cutoff, and clears what a
// writer that crashed long ago left uncommitted.
func TestBlobsKeysAndAbandoned(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	now := time.Now()
	s.SetClock(func() time.Time { return now })
	b := s.Blobs(DefaultPieceCache)
	key := putBlob(t, b, []byte("committed"))
	crashed, _ := b.Create()
	crashed.Write([]byte("never committed")) // and never aborted: the writer died

	if keys, err := b.Keys(now.Add(-time.Minute)); err != nil || len(keys) != 0 {
		t.Fatalf("keys before the blob existed: %v, %v", keys, err)
	}
	if keys, err := b.Keys(now.Add(time.Minute)); err != nil || len(keys) != 1 || keys[0] != key {
		t.Fatalf("keys: %v, %v; want [%s]", keys, err, key)
	}
	var rows int
	s.pool.QueryRow(t.Context(), `SELECT count(*) FROM blobs`).Scan(&rows)
	if rows != 2 {
		t.Fatalf("%d rows; a fresh uncommitted blob may be a write in progress and must stay", rows)
	}
	now = now.Add(2 * abandonedAfter)
	b.Keys(now)
	s.pool.QueryRow(t.Context(), `SELECT count(*) FROM blobs`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d rows after the abandoned blob's grace, want 1", rows)
	}
}

// Writes devices cause skip the WAL flush; the operator's do not.
func TestDeviceWritesSkipFlushOperatorWritesDoNot(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	var mainSetting, fastSetting string
	s.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&mainSetting)
	s.fast.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&fastSetting)
	if mainSetting != "on" || fastSetting != "off" {
		t.Fatalf("synchronous_commit: operator pool %q, device pool %q; want on, off", mainSetting, fastSetting)
	}
	var search string
	s.fast.QueryRow(t.Context(), `SHOW search_path`).Scan(&search)
	if !strings.HasPrefix(search, "fota_test_") {
		t.Fatalf("device pool lost the DSN's parameters: search_path %q", search)
	}
}

// A blob removed and published again through another replica (a new row)
// is found again by a replica that had the old one open.
func TestBlobsRepublishedElsewhere(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	replicaA, replicaB := s.Blobs(PieceSize), s.Blobs(PieceSize)
	data := make([]byte, PieceSize+100)
	rand.Read(data)
	key := putBlob(t, replicaA, data)
	if _, err := replicaB.Open(key); err != nil {
		t.Fatal(err)
	}
	replicaA.Remove(key)
	putBlob(t, replicaA, data)

	buf := make([]byte, 100)
	blob, _ := replicaB.Open(key)
	if _, err := blob.ReadAt(buf, PieceSize); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read through the stale handle: %v, want fs.ErrNotExist", err)
	}
	blob, err := replicaB.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blob.ReadAt(buf, PieceSize); err != nil || !bytes.Equal(buf, data[PieceSize:]) {
		t.Fatalf("read after reopening: %v", err)
	}
}
