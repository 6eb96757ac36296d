package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

// The conformance suite checks the kept counts only of stores that have them.
var _ storetest.SessionCounter = (*Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) fota.Store {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "fota.db"))
		if err != nil {
			t.Fatal(err)
		}
		s.SetClock(c.Now)
		return s
	})
}

func TestFileModeAndReopen(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, storetest.NewDevice("d1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %04o, want 0600 (it holds device keys)", st.Mode().Perm())
	}
	s, err = Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Device(ctx, "d1"); err != nil {
		t.Fatalf("device lost across reopen: %v", err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, _ := sql.Open("sqlite", file)
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(ctx, file)
	if err == nil || !strings.Contains(err.Error(), "newer than this fota knows") {
		t.Fatalf("opening a newer schema: %v", err)
	}
}

// TestCheckpointsRunInBackground: the WAL is copied back by the store's own
// goroutine, not by whichever request commits past SQLite's threshold.
// Once a checkpoint has copied everything, the next commit writes the WAL
// from its start again, so the file stops growing; with no checkpoint
// (this store's automatic backstop is at 64 MiB) it grows with every commit.
func TestCheckpointsRunInBackground(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next := 0
	commits := func(n int) int64 {
		t.Helper()
		for range n {
			if err := s.UseNonce(ctx, "dev", fmt.Sprintf("nonce-%d", next), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			next++
		}
		fi, err := os.Stat(file + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// A checkpoint lets the next commits reuse the WAL from its start, so
	// it stops growing. On a busy machine a round may miss the checkpoint:
	// ten rounds without one mean there is none.
	first := commits(300)
	for round := 0; ; round++ {
		time.Sleep(2 * checkpointEvery)
		second := commits(300)
		if second <= first*3/2 {
			return
		}
		if round == 9 {
			t.Fatalf("the WAL grew from %d to %d bytes over ten rounds of 300 commits %v apart: nothing checkpointed it in the background",
				first, second, 2*checkpointEvery)
		}
		first = second
	}
}

// databaseAt creates a database at file with the schema of migration n,
// as a fota of that time left it.
func databaseAt(t *testing.T, file string, n int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", file)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		names, _ := fs.Glob(migrations, fmt.Sprintf("migrations/%03d_*.sql", i))
		body, err := migrations.ReadFile(names[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", names[0], err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", n)); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestUpgradeToRollouts: a database from before rollouts (schema 4), with
// a device, a session and an event in it, opens with the device unlabelled,
// no inventory, and everything in no rollout.
func TestUpgradeToRollouts(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	db := databaseAt(t, file, 4)
	for _, q := range []string{
		`INSERT INTO releases (id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256, ciphertext_size,
			ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms, manifest, signature, blob_key)
			VALUES (1, 'ecowatt', 'esp32', '1.0.4', 1, 3000, 'x', 3008, 'y', 1024, 'iv', 'k', 'rsa-2048', '', 1, 1, x'00', x'00', 'b')`,
		`INSERT INTO devices (id, hardware, version, security_counter, psk, created_ms) VALUES ('old', 'esp32', '1.0.3', 0, zeroblob(32), 1)`,
		`INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, created_ms, updated_ms)
			VALUES ('s1', 'old', 1, '1.0.4', 'native', 'open', 3, 1, 1)`,
		`INSERT INTO events (time_ms, kind, device_id) VALUES (1, 'device-added', 'old')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Device(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if d.Labels == nil || len(d.Labels) != 0 || d.Inventory != (fota.Inventory{}) {
		t.Fatalf("upgraded device: labels %v, inventory %+v", d.Labels, d.Inventory)
	}
	if sess, err := s.Session(ctx, "s1"); err != nil || sess.RolloutID != 0 {
		t.Fatalf("upgraded session: %+v, %v", sess, err)
	}
	if evs, err := s.Events(ctx, fota.EventFilter{}); err != nil || len(evs) != 1 || evs[0].RolloutID != 0 {
		t.Fatalf("upgraded events: %+v, %v", evs, err)
	}
	if _, _, err := s.DeviceRollout(ctx, "old"); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("upgraded device's rollout: %v", err)
	}
	// The session ends as before; labels can be set.
	if err := s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionConfirmed}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetDeviceLabels(ctx, "old", map[string]string{"ring": "canary"}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeToSessionCounts: a database from before the kept session
// counts (schema 7) opens with counts of the sessions active in it, which
// the caps then read; and the triggers follow changes no store method
// makes (an API changed, an active session deleted).
func TestUpgradeToSessionCounts(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	db := databaseAt(t, file, 7)
	exec := func(db interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(db, `INSERT INTO releases (id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256, ciphertext_size,
		ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms, manifest, signature, blob_key)
		VALUES (1, 'ecowatt', 'esp32', '1.0.4', 1, 3000, 'x', 3008, 'y', 1024, 'iv', 'k', 'rsa-2048', '', 1, 1, x'00', x'00', 'b')`)
	now := time.Now().UnixMilli()
	for i, sess := range []struct{ api, state string }{
		{fota.APINative, fota.SessionOpen}, {fota.APINative, fota.SessionApplied}, {fota.APINative, fota.SessionConfirmed},
		{fota.APIEcoWatt, fota.SessionDownloaded}, {fota.APIEcoWatt, fota.SessionVerified}, {fota.APIEcoWatt, fota.SessionOpen},
		{fota.APIEcoWatt, fota.SessionAbandoned}, {fota.APIEcoWatt, fota.SessionFailed},
	} {
		dev := fmt.Sprintf("d%d", i)
		exec(db, `INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms) VALUES (?, 'esp32', '1.0.3', 0, zeroblob(32), 'both', 1)`, dev)
		exec(db, `INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, created_ms, updated_ms)
			VALUES (?, ?, 1, '1.0.4', ?, ?, 3, ?, ?)`, "s-"+dev, dev, sess.api, sess.state, now, now)
	}
	db.Close()

	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckCountsAfterUpgrade(t, s, func(q string, args ...any) { exec(s.db, q, args...) })
}

// TestUpgradeToDeltas: a database from before delta artifacts (schema 8)
// opens with its release and sessions as full-image ones.
func TestUpgradeToDeltas(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "fota.db")
	db := databaseAt(t, file, 8)
	now := time.Now().UnixMilli()
	for _, q := range []string{
		`INSERT INTO releases (id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256, ciphertext_size,
			ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms, manifest, signature, blob_key)
			VALUES (1, 'ecowatt', 'esp32', '1.0.4', 1, 3000, 'x', 3008, 'y', 1024, 'iv', 'k', 'rsa-2048', '', 1, 1, x'00', x'00', 'b')`,
		`INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms) VALUES ('old', 'esp32', '1.0.3', 0, zeroblob(32), 'both', 1)`,
		fmt.Sprintf(`INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, bytes_served, created_ms, updated_ms)
			VALUES ('s-failed', 'old', 1, '1.0.4', 'native', 'failed', 3, 200, %d, %d), ('s-open', 'old', 1, '1.0.4', 'native', 'open', 3, 100, %d, %d)`,
			now-1, now-1, now, now),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckDeltasAfterUpgrade(t, s)
}
