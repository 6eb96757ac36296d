package server

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the raw connection that loads the fleet

	"github.com/ecowatt/fota/protocol"
)

// loadFleet inserts n devices straight into the store's database, in one
// transaction (CreateDevice's fsync each would take minutes): a tenth of
// them ring=canary, and each at one of 50 sites. Only check-ins are
// measured; the fleet is their setting.
func (e *env) loadFleet(b *testing.B, n int) {
	b.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dir, "fota.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st, err := tx.Prepare(`INSERT INTO devices (id, hardware, version, security_counter, psk, created_ms, labels) VALUES (?, 'esp32', '1.0.3', 0, ?, 1, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	psk := make([]byte, 32)
	for i := range n {
		ring := "main"
		if i%10 == 0 {
			ring = "canary"
		}
		if _, err := st.Exec(fmt.Sprintf("fleet-%06d", i), psk, fmt.Sprintf(`{"ring":%q,"site":"plant-%d"}`, ring, i%50)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkNativeCheckRollouts is BenchmarkNativeCheck in a fleet: 100,000
// devices with labels, 20 rollouts of which 5 still run (the others ended:
// completed, aborted or superseded), each over its sites. The device
// checking in is a member of a running rollout and already runs its
// release (most check-ins), or is downloading it (its session goes on), or
// is of a hardware no rollout is for.
func BenchmarkNativeCheckRollouts(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	e.loadFleet(b, benchFleetSize)
	for i := range 20 {
		v := fmt.Sprintf("1.1.%d", i)
		bl := e.build(v, e.signer, 4096)
		if _, err := e.admin.Publish(ctx, bytes.NewReader(bl.bundle)); err != nil {
			b.Fatal(err)
		}
		// Rollout i covers sites i*5 to i*5+4 (wrapping): ten sites of the
		// fleet's fifty, the later taking over from the earlier.
		sel := fmt.Sprintf("site!=plant-%d", (i*5+25)%50)
		waves := "10%,50%,100%"
		if i >= 15 {
			waves = "100%" // open to all, so the benchmarked member is offered
		}
		ro, err := e.admin.CreateRollout(ctx, protocol.CreateRollout{Release: v, Selector: sel, Waves: waves, Supersede: true})
		if err != nil {
			b.Fatal(err)
		}
		if i < 15 {
			if _, err := e.admin.RolloutAction(ctx, ro.ID, "abort", "bench: an older rollout"); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The benchmarked devices, registered through the API for their keys,
	// with labels the running rollouts' selectors take.
	member := e.addDevice("bench-member", "1.1.19")
	if _, err := e.admin.SetLabels(ctx, "bench-member", map[string]string{"ring": "canary", "site": "plant-3"}, nil); err != nil {
		b.Fatal(err)
	}
	// A device of hardware no rollout is for: its check-in still looks.
	added, err := e.admin.AddDevice(ctx, protocol.AddDevice{ID: "bench-none", Hardware: "esp32s3", Version: "1.0.3"})
	if err != nil {
		b.Fatal(err)
	}
	none, err := protocol.ParsePSK(added.PSK)
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, id string, psk protocol.PSK, body []byte, wantUpdate bool) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest("POST", "/v1/device/check", bytes.NewReader(body))
			protocol.SignRequest(req, id, psk, body, e.now())
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, req)
			if w.Code != 200 || bytes.Contains(w.Body.Bytes(), []byte(`"update":true`)) != wantUpdate {
				b.Fatalf("check: %d %s", w.Code, w.Body)
			}
		}
	}
	b.Run("member-up-to-date", func(b *testing.B) {
		run(b, "bench-member", member, []byte(`{"version":"1.1.19","hardware":"esp32"}`), false)
	})
	b.Run("member-downloading", func(b *testing.B) {
		run(b, "bench-member", member, []byte(`{"version":"1.0.3","hardware":"esp32"}`), true)
	})
	b.Run("in-none", func(b *testing.B) {
		run(b, "bench-none", none, []byte(`{"version":"1.0.3","hardware":"esp32s3"}`), false)
	})
}

// benchFleetSize is the fleet of BenchmarkNativeCheckRollouts.
var benchFleetSize = 100_000
