package postgres

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ecowatt/fota"
)

// PieceSize is how much ciphertext one blob_pieces row holds: large enough
// that a 4 MiB image is 16 rows, small enough that one read of a 1 KiB
// chunk fetches little it does not need.
const PieceSize = 256 << 10

// DefaultPieceCache bounds the ciphertext each replica keeps in memory.
const DefaultPieceCache = 256 << 20

// abandonedAfter is when a blob nobody committed counts as left by a crash.
const abandonedAfter = time.Hour

// Blobs is a fota.BlobStore in PostgreSQL, so replicas need no shared
// folder. Blobs never change once committed, so every replica caches the
// pieces it reads, least recently used first out.
type Blobs struct {
	s *Store

	mu       sync.Mutex
	open     map[string]*dbBlob // committed blobs never change, so neither do these
	cache    map[pieceKey]*list.Element
	lru      list.List // of *cachedPiece, front = most recent
	cached   int64
	maxCache int64
}

type pieceKey struct {
	blob int64
	idx  int
}

type cachedPiece struct {
	key  pieceKey
	data []byte
}

var _ fota.BlobStore = (*Blobs)(nil)

// Blobs returns the store's blob store, caching up to cacheBytes of pieces.
func (s *Store) Blobs(cacheBytes int64) *Blobs {
	if cacheBytes < PieceSize {
		cacheBytes = PieceSize
	}
	return &Blobs{s: s, open: map[string]*dbBlob{}, cache: map[pieceKey]*list.Element{}, maxCache: cacheBytes}
}

// Create starts a blob. Its row exists from the start, keyless, so pieces
// can be written as they fill rather than held in memory.
func (b *Blobs) Create() (fota.TempBlob, error) {
	var id int64
	err := b.s.pool.QueryRow(context.Background(),
		`INSERT INTO blobs (created_ms) VALUES ($1) RETURNING id`, b.s.now().UnixMilli()).Scan(&id)
	if err != nil {
		return nil, fmt.Errorf("create blob: %w", err)
	}
	return &tempBlob{b: b, id: id, buf: make([]byte, 0, PieceSize)}, nil
}

type tempBlob struct {
	b    *Blobs
	id   int64
	idx  int
	size int64
	buf  []byte
	err  error
}

func (t *tempBlob) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n := 0
	for len(p) > 0 {
		c := copy(t.buf[len(t.buf):cap(t.buf)], p)
		t.buf = t.buf[:len(t.buf)+c]
		p = p[c:]
		n += c
		if len(t.buf) == cap(t.buf) {
			if err := t.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (t *tempBlob) flush() error {
	if len(t.buf) == 0 {
		return nil
	}
	_, err := t.b.s.pool.Exec(context.Background(),
		`INSERT INTO blob_pieces (blob_id, idx, data) VALUES ($1, $2, $3)`, t.id, t.idx, t.buf)
	if err != nil {
		t.err = fmt.Errorf("write blob piece %d: %w", t.idx, err)
		return t.err
	}
	t.size += int64(len(t.buf))
	t.idx++
	t.buf = t.buf[:0]
	return nil
}

// Commit names the blob. Blobs are named by their content's hash, so if
// the name is taken the same bytes are already there: keep those.
func (t *tempBlob) Commit(key string) error {
	if !fota.ValidBlobKey(key) {
		t.Abort()
		return fmt.Errorf("commit blob: bad key %q", key)
	}
	if t.err != nil {
		t.Abort()
		return fmt.Errorf("commit blob: %w", t.err)
	}
	if err := t.flush(); err != nil {
		t.Abort()
		return fmt.Errorf("commit blob: %w", err)
	}
	_, err := t.b.s.pool.Exec(context.Background(),
		`UPDATE blobs SET key = $1, size = $2 WHERE id = $3`, key, t.size, t.id)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		t.Abort()
		return nil
	}
	if err != nil {
		t.Abort()
		return fmt.Errorf("commit blob: %w", err)
	}
	return nil
}

func (t *tempBlob) Abort() {
	t.b.s.pool.Exec(context.Background(), `DELETE FROM blobs WHERE id = $1`, t.id)
}

// Open returns a committed blob. Errors wrap fs.ErrNotExist if absent.
func (b *Blobs) Open(key string) (fota.Blob, error) {
	if !fota.ValidBlobKey(key) {
		return nil, fmt.Errorf("open blob %q: %w", key, fs.ErrNotExist)
	}
	b.mu.Lock()
	blob, ok := b.open[key]
	b.mu.Unlock()
	if ok {
		return blob, nil
	}
	var id, size int64
	err := b.s.pool.QueryRow(context.Background(), `SELECT id, size FROM blobs WHERE key = $1`, key).Scan(&id, &size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("open blob %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", key, err)
	}
	blob = &dbBlob{b: b, key: key, id: id, size: size}
	b.mu.Lock()
	b.open[key] = blob
	b.mu.Unlock()
	return blob, nil
}

type dbBlob struct {
	b    *Blobs
	key  string
	id   int64
	size int64
}

func (d *dbBlob) Size() int64 { return d.size }

func (d *dbBlob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read blob: negative offset")
	}
	n := 0
	for n < len(p) && off < d.size {
		idx := int(off / PieceSize)
		piece, err := d.b.piece(d.id, idx)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed by another replica, perhaps published again since
			// under a new id: the next Open looks the key up afresh.
			d.b.mu.Lock()
			if d.b.open[d.key] == d {
				delete(d.b.open, d.key)
			}
			d.b.mu.Unlock()
		}
		if err != nil {
			return n, err
		}
		within := int(off % PieceSize)
		if within >= len(piece) {
			return n, fmt.Errorf("read blob %d: piece %d is %d bytes, short of offset %d", d.id, idx, len(piece), within)
		}
		c := copy(p[n:], piece[within:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// piece returns one piece, from the cache or the database.
func (b *Blobs) piece(blob int64, idx int) ([]byte, error) {
	k := pieceKey{blob, idx}
	b.mu.Lock()
	if e, ok := b.cache[k]; ok {
		b.lru.MoveToFront(e)
		data := e.Value.(*cachedPiece).data
		b.mu.Unlock()
		return data, nil
	}
	b.mu.Unlock()

	var data []byte
	err := b.s.pool.QueryRow(context.Background(),
		`SELECT data FROM blob_pieces WHERE blob_id = $1 AND idx = $2`, blob, idx).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read blob %d piece %d: %w", blob, idx, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %d piece %d: %w", blob, idx, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.cache[k]; ok { // another reader fetched it meanwhile
		return e.Value.(*cachedPiece).data, nil
	}
	b.cache[k] = b.lru.PushFront(&cachedPiece{key: k, data: data})
	b.cached += int64(len(data))
	for b.cached > b.maxCache {
		last := b.lru.Back()
		old := last.Value.(*cachedPiece)
		b.lru.Remove(last)
		delete(b.cache, old.key)
		b.cached -= int64(len(old.data))
	}
	return data, nil
}

// Remove deletes a committed blob; its pieces go with it.
func (b *Blobs) Remove(key string) error {
	if !fota.ValidBlobKey(key) {
		return fmt.Errorf("remove blob %q: bad key", key)
	}
	b.mu.Lock()
	delete(b.open, key)
	b.mu.Unlock()
	if _, err := b.s.pool.Exec(context.Background(), `DELETE FROM blobs WHERE key = $1`, key); err != nil {
		return fmt.Errorf("remove blob: %w", err)
	}
	return nil
}

// Keys lists blobs committed before cutoff, for sweeping orphans, and
// deletes uncommitted ones a crashed writer abandoned long ago.
func (b *Blobs) Keys(cutoff time.Time) ([]string, error) {
	ctx := context.Background()
	if _, err := b.s.pool.Exec(ctx, `DELETE FROM blobs WHERE key IS NULL AND created_ms < $1`,
		b.s.now().Add(-abandonedAfter).UnixMilli()); err != nil {
		return nil, fmt.Errorf("remove abandoned blobs: %w", err)
	}
	rows, err := b.s.pool.Query(ctx, `SELECT key FROM blobs WHERE key IS NOT NULL AND created_ms < $1 ORDER BY key`, cutoff.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	return keys, nil
}

// Close drops the cache; the pool belongs to the Store.
func (b *Blobs) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.open)
	clear(b.cache)
	b.lru.Init()
	b.cached = 0
	return nil
}
