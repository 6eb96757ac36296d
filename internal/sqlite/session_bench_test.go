package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

// BenchmarkOpenSessionWith10kActive is what a check-in pays to open a
// session under the server's session cap while a rollout wave has 10,000
// sessions active: each open replaces one device's session, so the number
// active stays at 10,000.
func BenchmarkOpenSessionWith10kActive(b *testing.B) {
	const active = 10_000
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "fota.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	rel := storetest.NewRelease("esp32", "1.0.4")
	if err := s.CreateRelease(ctx, rel); err != nil {
		b.Fatal(err)
	}
	// One transaction, not an open's each: only the opens are measured.
	psk := storetest.NewDevice("x").PSK
	now := ms(time.Now())
	err = s.tx(ctx, func(tx *txn) error {
		for i := range active {
			id := fmt.Sprintf("dev-%06d", i)
			if _, err := tx.ExecContext(ctx, `INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms)
				VALUES (?, 'esp32', '1.0.0', 0, ?, ?, 1)`, id, psk[:], fota.APIBoth); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, created_ms, updated_ms)
				VALUES (?, ?, ?, ?, ?, ?, 3, ?, ?)`, "seed-"+id, id, rel.ID, rel.Version, fota.APINative, fota.SessionOpen, now, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	caps := fota.SessionCaps{Total: 2 * active, OnAPI: 2 * active}
	for i := 0; b.Loop(); i++ {
		sess := &fota.Session{ID: fmt.Sprintf("s-%d", i), DeviceID: fmt.Sprintf("dev-%06d", i%active), ReleaseID: rel.ID,
			ReleaseVersion: rel.Version, API: fota.APINative, TotalChunks: 3}
		if err := s.OpenSession(ctx, sess, caps); err != nil {
			b.Fatal(err)
		}
	}
}
