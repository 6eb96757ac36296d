package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ecowatt/fota"
)

// digestLimit bounds the chunk digests kept in memory: 32 bytes a 1 KiB
// chunk, so 16 MiB of digests cover 512 MiB of releases being downloaded.
// A release pushed out is hashed again when a device next asks for it
// (16 MiB of firmware in about 25 ms).
const digestLimit = 16 << 20

// digestCache keeps each ciphertext's list of chunk SHA-256 digests, over
// which v2 chunk HMACs are computed: a release's chunks are hashed once
// rather than once per device. Entries are made on first use, by one
// request while the others wait, and the least recently used go first when
// the limit is reached.
type digestCache struct {
	limit int64
	clock atomic.Uint64
	mu    sync.Mutex
	byKey map[string]*digestEntry // by the ciphertext's blob key: a release's or a delta's
	used  int64
}

type digestEntry struct {
	ready   chan struct{} // closed once sums or err is set
	sums    [][32]byte
	err     error
	lastUse atomic.Uint64
}

func newDigestCache(limit int64) *digestCache {
	return &digestCache{limit: limit, byKey: map[string]*digestEntry{}}
}

// get returns rel's chunk digests, hashing them with compute if they are
// not kept. A failed computation is not kept: the next request tries again.
func (c *digestCache) get(ctx context.Context, rel *fota.Release, compute func(*fota.Release) ([][32]byte, error)) ([][32]byte, error) {
	c.mu.Lock()
	e, ok := c.byKey[rel.BlobKey]
	if !ok {
		e = &digestEntry{ready: make(chan struct{})}
		c.byKey[rel.BlobKey] = e
	}
	c.mu.Unlock()
	e.lastUse.Store(c.clock.Add(1))
	if !ok {
		// Not tied to this request: the devices waiting need it done.
		e.sums, e.err = compute(rel)
		close(e.ready)
		c.settle(rel.BlobKey, e)
	}
	select {
	case <-e.ready:
		return e.sums, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// settle accounts for a finished entry, dropping it if it failed and the
// least recently used others while over the limit.
func (c *digestCache) settle(id string, e *digestEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey[id] != e {
		return // forgotten meanwhile
	}
	if e.err != nil {
		delete(c.byKey, id)
		return
	}
	c.used += int64(len(e.sums)) * sha256.Size
	for c.used > c.limit {
		var oldID string
		var old *digestEntry
		for id, o := range c.byKey {
			if isReady(o) && o.sums != nil && o != e && (old == nil || o.lastUse.Load() < old.lastUse.Load()) {
				oldID, old = id, o
			}
		}
		if old == nil {
			break // only the newest is left: keep it however large
		}
		delete(c.byKey, oldID)
		c.used -= int64(len(old.sums)) * sha256.Size
	}
}

func isReady(e *digestEntry) bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

// forget drops a deleted release's digests.
func (c *digestCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[id]; ok {
		if isReady(e) {
			c.used -= int64(len(e.sums)) * sha256.Size
		}
		delete(c.byKey, id)
	}
}

// put keeps digests made elsewhere: at publish, from the verified upload.
func (c *digestCache) put(id string, sums [][32]byte) {
	e := &digestEntry{ready: make(chan struct{}), sums: sums}
	close(e.ready)
	e.lastUse.Store(c.clock.Add(1))
	c.mu.Lock()
	if old, ok := c.byKey[id]; ok && isReady(old) {
		c.used -= int64(len(old.sums)) * sha256.Size
	}
	c.byKey[id] = e
	c.mu.Unlock()
	c.settle(id, e)
}

// chunkHasher hashes a stream chunk by chunk as it is written.
type chunkHasher struct {
	size   int
	h      hash.Hash
	filled int
	sums   [][32]byte
}

func newChunkHasher(chunkSize int, chunks int) *chunkHasher {
	return &chunkHasher{size: chunkSize, h: sha256.New(), sums: make([][32]byte, 0, chunks)}
}

func (c *chunkHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), c.size-c.filled)
		c.h.Write(p[:take])
		c.filled += take
		p = p[take:]
		if c.filled == c.size {
			c.next()
		}
	}
	return n, nil
}

func (c *chunkHasher) next() {
	var sum [32]byte
	c.sums = append(c.sums, [32]byte(c.h.Sum(sum[:0])))
	c.h.Reset()
	c.filled = 0
}

// digests returns the digest of every chunk, the short last one included.
func (c *chunkHasher) digests() [][32]byte {
	if c.filled > 0 {
		c.next()
	}
	return c.sums
}

// chunkDigests hashes each chunk of a release's stored ciphertext, and the
// whole of it: a stored file that no longer matches the release's SHA-256
// is refused rather than served under valid HMACs.
func (s *Server) chunkDigests(rel *fota.Release) ([][32]byte, error) {
	chunks := newChunkHasher(rel.ChunkSize, rel.Chunks())
	whole := sha256.New()
	both := io.MultiWriter(whole, chunks)
	bp, pool := getBlock(blockData)
	defer pool.Put(bp)
	for off := int64(0); off < rel.CiphertextSize; off += blockData {
		block := (*bp)[:min(blockData, rel.CiphertextSize-off)]
		if err := s.readAt(rel, block, off); err != nil {
			return nil, fmt.Errorf("hash chunks: %w", err)
		}
		both.Write(block)
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != rel.CiphertextSHA256 {
		s.log.Error("stored release ciphertext does not match its SHA-256", "release_version", rel.Version, "blob", rel.BlobKey, "sha256", got)
		return nil, fmt.Errorf("release %s: the stored ciphertext (blob %s) does not match the release's SHA-256; delete the release and publish its bundle again", rel.Version, rel.BlobKey)
	}
	return chunks.digests(), nil
}
