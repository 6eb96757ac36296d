package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// pool is a connection pool that prepares each query once and reuses the
// statement (database/sql prepares it again on each connection that runs
// it). SQLite parsed every query afresh otherwise: a sixth of a check-in's
// server time went to its parser.
type pool struct {
	*sql.DB
	// writer is the database's one write lock, shared by both pools: a
	// writer waits for it here, handed over at once, rather than in
	// SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries
	// and left the lock idle while thousands of check-ins queued for it.
	writer  chan struct{}
	mu      sync.RWMutex
	stmts   map[string]*sql.Stmt
	warming map[string]bool
	closed  bool
}

// maxStmts bounds the cache: queries are constants and a few filter
// combinations, so a longer list would mean a query built from values.
// Past it, queries run unprepared.
const maxStmts = 128

func newPool(db *sql.DB, writer chan struct{}) *pool {
	return &pool{DB: db, writer: writer, stmts: map[string]*sql.Stmt{}, warming: map[string]bool{}}
}

// lockWrites takes the write lock, or fails when ctx ends first.
func (p *pool) lockWrites(ctx context.Context) error {
	select {
	case p.writer <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pool) unlockWrites() { <-p.writer }

func (p *pool) cached(query string) *sql.Stmt {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stmts[query]
}

// stmt returns the prepared statement for query, preparing it if needed,
// or nil where it cannot be prepared: the caller then runs the query as
// text, which gives the same error a failed preparation would have. No
// lock is held while preparing, which waits for a free connection: the
// holders of connections may be waiting for the lock.
func (p *pool) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := p.cached(query); st != nil {
		return st
	}
	p.mu.RLock()
	full := len(p.stmts) >= maxStmts
	p.mu.RUnlock()
	if full {
		return nil
	}
	st, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if kept := p.stmts[query]; kept != nil || p.closed {
		st.Close() // prepared meanwhile, or too late
		return kept
	}
	p.stmts[query] = st
	return st
}

// warm prepares query in the background. A transaction cannot wait for
// it: preparing on the pool needs a second connection while the
// transaction holds one, and with every connection in a transaction that
// wait would never end.
func (p *pool) warm(query string) {
	p.mu.Lock()
	if p.warming[query] || p.closed {
		p.mu.Unlock()
		return
	}
	p.warming[query] = true
	p.mu.Unlock()
	go func() {
		p.stmt(context.Background(), query)
		p.mu.Lock()
		delete(p.warming, query)
		p.mu.Unlock()
	}()
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.DB.QueryContext(ctx, query, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.DB.QueryRowContext(ctx, query, args...)
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := p.lockWrites(ctx); err != nil {
		return nil, err
	}
	defer p.unlockWrites()
	if st := p.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.DB.ExecContext(ctx, query, args...)
}

// Close closes the statements, then the pool.
func (p *pool) Close() error {
	p.mu.Lock()
	p.closed = true
	for q, st := range p.stmts {
		st.Close()
		delete(p.stmts, q)
	}
	p.mu.Unlock()
	return p.DB.Close()
}

// txn is a transaction whose queries use its pool's prepared statements.
type txn struct {
	*sql.Tx
	pool *pool
}

// stmt is the pool's statement for query bound to the transaction, or nil
// until the pool has it.
func (t *txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.pool.cached(query); st != nil {
		return t.Tx.StmtContext(ctx, st)
	}
	t.pool.warm(query)
	return nil
}

// PrepareContext returns the pool's statement bound to the transaction.
func (t *txn) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st, nil
	}
	return t.Tx.PrepareContext(ctx, query)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}
