package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkUseNonce records nonces from 64 concurrent requests, as a busy
// server does: the cost of replay protection per authenticated request.
func BenchmarkUseNonce(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "fota.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	expires := time.Now().Add(10 * time.Minute)
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := s.UseNonce(context.Background(), fmt.Sprintf("device-%05d", i%10000), fmt.Sprintf("%032x", i), expires); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
