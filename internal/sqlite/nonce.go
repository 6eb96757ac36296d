package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// Every authenticated device request records its nonce, so nonce inserts
// are the most frequent write there is. They are group-committed: one
// goroutine takes the inserts that wait, up to nonceBatch at a time, and
// writes them in one transaction, answering each caller whether its nonce
// was new. A caller still learns of a replay before its request proceeds.

const nonceBatch = 512

type nonceReq struct {
	ctx      context.Context
	deviceID string
	nonce    string
	expires  int64
	done     chan error
}

// errClosed answers requests that reach a closed store.
var errClosed = errors.New("the store is closed")

func (s *Store) startNonceWriter() {
	s.nonces = make(chan nonceReq, nonceBatch)
	s.stop = make(chan struct{})
	s.noncesDone = make(chan struct{})
	go func() {
		defer close(s.noncesDone)
		batch := make([]nonceReq, 0, nonceBatch)
		for {
			select {
			case <-s.stop:
				for {
					select {
					case r := <-s.nonces:
						r.done <- errClosed
					default:
						return
					}
				}
			case first := <-s.nonces:
				batch = append(batch[:0], first)
			fill:
				for len(batch) < nonceBatch {
					select {
					case r := <-s.nonces:
						batch = append(batch, r)
					default:
						break fill
					}
				}
				s.writeNonces(batch)
			}
		}
	}()
}

func (s *Store) writeNonces(batch []nonceReq) {
	results := make([]error, len(batch))
	// Durable (fsynced) before any caller of the batch hears back: a nonce
	// lost to a power cut could be replayed once the server is back. The
	// group commit shares one fsync among every nonce that waited for it,
	// done after the commit (syncWAL).
	err := inTx(context.Background(), s.fast, func(tx *txn) error {
		stmt, err := tx.PrepareContext(context.Background(), `INSERT INTO nonces (device_id, nonce, expires_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range batch {
			res, err := stmt.Exec(r.deviceID, r.nonce, r.expires)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				results[i] = fota.Errorf(fota.ECONFLICT, "nonce already used")
			}
		}
		return nil
	})
	if err == nil {
		err = s.syncWAL()
	}
	for i, r := range batch {
		if err != nil {
			r.done <- fmt.Errorf("record nonce: %w", err)
		} else {
			r.done <- results[i]
		}
	}
}

// UseNonce records a nonce; a second use is a replay.
func (s *Store) UseNonce(ctx context.Context, deviceID, nonce string, expires time.Time) error {
	r := nonceReq{ctx: ctx, deviceID: deviceID, nonce: nonce, expires: ms(expires), done: make(chan error, 1)}
	select {
	case s.nonces <- r:
	case <-s.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
