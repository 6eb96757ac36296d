package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// Every authenticated device request records its nonce, so nonce inserts
// are the most frequent write there is. They are group-committed
// (batcher): a caller still learns of a replay before its request
// proceeds.

type nonceWrite struct {
	deviceID string
	nonce    string
	expires  int64
}

// errClosed answers requests that reach a closed store.
var errClosed = errors.New("the store is closed")

func (s *Store) writeNonces(batch []nonceWrite) []error {
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
	if err != nil {
		return failAll(len(batch), fmt.Errorf("record nonce: %w", err))
	}
	return results
}

// UseNonce records a request's nonce; ECONFLICT if it was used before.
func (s *Store) UseNonce(ctx context.Context, deviceID, nonce string, expires time.Time) error {
	return s.nonces.do(ctx, nonceWrite{deviceID: deviceID, nonce: nonce, expires: ms(expires)})
}
