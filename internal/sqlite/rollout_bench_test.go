package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/listcache"
	"github.com/ecowatt/fota/internal/storetest"
)

// benchFleet is a store with devices esp32 devices and rollouts rollouts
// of them, each over 2*devices/rollouts devices, the window sliding by
// half its size: every device is in two, the older superseded, as a fleet
// is after a year of releases. It returns the rollouts, oldest first.
func benchFleet(b *testing.B, devices, rollouts int) (*Store, []*fota.Rollout) {
	b.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "fota.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	// One transaction, not CreateDevice's fsync each: only the reads are measured.
	psk := storetest.NewDevice("x").PSK
	err = s.tx(ctx, func(tx *txn) error {
		for i := range devices {
			if _, err := tx.ExecContext(ctx, `INSERT INTO devices (id, hardware, version, security_counter, psk, created_ms) VALUES (?, 'esp32', '1.0.0', 0, ?, 1)`,
				fmt.Sprintf("dev-%06d", i), psk[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var out []*fota.Rollout
	step := devices / rollouts
	for i := range rollouts {
		rel := storetest.NewRelease("esp32", fmt.Sprintf("1.%d.0", i+1))
		if err := s.CreateRelease(ctx, rel); err != nil {
			b.Fatal(err)
		}
		r := &fota.Rollout{ReleaseID: rel.ID, Selector: "ring=all", Waves: "10%,all", WaveEnds: []int{step / 5, 2 * step}, Soak: time.Hour,
			MaxFailuresPercent: 5, MaxFailures: -1, MinOutcomes: 10, SilentTimeout: 2 * time.Hour, Windows: []string{"02:00-05:00"},
			State: fota.RolloutRunning, Wave: 2}
		var members []*fota.RolloutMember
		for j := range 2 * step {
			wave := 2
			if j < step/5 {
				wave = 1
			}
			members = append(members, &fota.RolloutMember{DeviceID: fmt.Sprintf("dev-%06d", (i*step+j)%devices), Wave: wave})
		}
		if err := s.CreateRollout(ctx, r, members, true); err != nil {
			b.Fatal(err)
		}
		out = append(out, r)
	}
	return s, out
}

// BenchmarkDeviceRollout is what a check-in pays to find its device's
// rollout, with 100,000 devices and 20 rollouts: for a member (in two
// rollouts, one superseded), for a device in none, for a member of a
// rollout that lists its thousand devices, and from concurrent check-ins.
func BenchmarkDeviceRollout(b *testing.B) {
	s, rollouts := benchFleet(b, 100_000, 20)
	ctx := context.Background()
	last := rollouts[len(rollouts)-1]
	// Make dev-099999 a device in no rollout: its memberships ended.
	if _, err := s.db.ExecContext(ctx, `UPDATE rollout_members SET state = ? WHERE device_id = ?`, fota.MemberRemoved, "dev-099999"); err != nil {
		b.Fatal(err)
	}
	b.Run("member", func(b *testing.B) {
		i := 0
		for b.Loop() {
			// dev-000000..dev-004999 are in the first and the last rollout.
			r, m, err := s.DeviceRollout(ctx, fmt.Sprintf("dev-%06d", i%5000))
			if err != nil || r.ID != last.ID || m.State != fota.MemberPending {
				b.Fatalf("DeviceRollout: %v, %+v", err, m)
			}
			i++
		}
	})
	b.Run("none", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.DeviceRollout(ctx, "dev-099999"); fota.ErrorCode(err) != fota.ENOTFOUND {
				b.Fatalf("DeviceRollout of a device in none: %v", err)
			}
		}
	})
	b.Run("listed-1000", func(b *testing.B) {
		// The rollout names its thousand target devices: a list every
		// check-in reads back.
		var ids []string
		for i := range 1000 {
			ids = append(ids, fmt.Sprintf("dev-%06d", i))
		}
		if _, err := s.db.ExecContext(ctx, `UPDATE rollouts SET device_ids = ? WHERE id = ?`, listcache.Encode(ids), last.ID); err != nil {
			b.Fatal(err)
		}
		defer s.db.ExecContext(ctx, `UPDATE rollouts SET device_ids = 'null' WHERE id = ?`, last.ID)
		i := 0
		for b.Loop() {
			r, _, err := s.DeviceRollout(ctx, fmt.Sprintf("dev-%06d", i%1000))
			if err != nil || len(r.DeviceIDs) != 1000 {
				b.Fatalf("DeviceRollout: %v", err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, _, err := s.DeviceRollout(ctx, fmt.Sprintf("dev-%06d", i%100_000)); err != nil && fota.ErrorCode(err) != fota.ENOTFOUND {
					b.Error(err)
					return
				}
				i += 7919
			}
		})
	})
}

// BenchmarkRolloutTally counts a 10,000-member rollout, as a health gate
// does each tick, with 100,000 devices and 20 rollouts stored.
func BenchmarkRolloutTally(b *testing.B) {
	s, rollouts := benchFleet(b, 100_000, 20)
	ctx := context.Background()
	last := rollouts[len(rollouts)-1]
	for b.Loop() {
		tally, err := s.RolloutTally(ctx, last.ID, time.Now().Add(-time.Hour))
		if err != nil || len(tally) != 2 || tally[0].Members+tally[1].Members != 10_000 {
			b.Fatalf("tally: %v, %+v", err, tally)
		}
	}
}
