package postgres

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

// BenchmarkOpenSessionWith10kActive is what a check-in pays to open a
// session under the server's session cap while a rollout wave has 10,000
// sessions active: each open replaces one device's session, so the number
// active stays at 10,000. parallel opens from as many goroutines as the
// fast pool has connections, as a replica under a wave does.
func BenchmarkOpenSessionWith10kActive(b *testing.B) {
	const active = 10_000
	ctx := context.Background()
	s := freshStore(b)
	b.Cleanup(func() { s.Close() })
	rel := storetest.NewRelease("esp32", "1.0.4")
	if err := s.CreateRelease(ctx, rel); err != nil {
		b.Fatal(err)
	}
	// Set-based inserts, not 10,000 opens: only the opens are measured.
	now := ms(s.now())
	if _, err := s.pool.Exec(ctx, `INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms)
		SELECT format('dev-%s', lpad(i::text, 6, '0')), 'esp32', '1.0.0', 0, '\x00', $1, 1 FROM generate_series(0, $2 - 1) AS i`,
		fota.APIBoth, active); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, created_ms, updated_ms)
		SELECT 'seed-' || id, id, $1, $2, $3, $4, 3, $5, $5 FROM devices`, rel.ID, rel.Version, fota.APINative, fota.SessionOpen, now); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	caps := fota.SessionCaps{Total: 2 * active, OnAPI: 2 * active}
	var n atomic.Int64
	open := func() error {
		i := n.Add(1)
		return s.OpenSession(ctx, &fota.Session{ID: fmt.Sprintf("s-%d", i), DeviceID: fmt.Sprintf("dev-%06d", i%active), ReleaseID: rel.ID,
			ReleaseVersion: rel.Version, API: fota.APINative, TotalChunks: 3}, caps)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := open(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(max(1, defaultMaxConns/2))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := open(); err != nil {
					b.Error(err) // not Fatal: this is not the benchmark's goroutine
					return
				}
			}
		})
	})
}
