package postgres

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/pgtest"
	"github.com/ecowatt/fota/internal/storetest"
)

// freshStore opens a store in a schema of its own, dropped after the test.
func freshStore(t testing.TB) *Store {
	s, err := Open(context.Background(), pgtest.Schema(t, "fota_test_"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The conformance suite checks the kept counts only of stores that have them.
var _ storetest.SessionCounter = (*Store)(nil)

func TestConformance(t *testing.T) {
	pgtest.DSN(t)
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) fota.Store {
		s := freshStore(t)
		s.SetClock(c.Now)
		return s
	})
}

func TestMigrationsIdempotentAndNewerSchemaRefused(t *testing.T) {
	s := freshStore(t)
	ctx := context.Background()
	// A second replica starting on the same database applies nothing.
	cfg := s.pool.Config()
	s2, err := OpenConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version, applied_ms) VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	_, err = OpenConfig(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "newer than this fota knows") {
		t.Fatalf("opening a newer schema: %v", err)
	}
	s.Close()
}

// migrateTo brings a new schema to migration n, as a fota of that time
// left it; exec runs SQL on it.
func migrateTo(t *testing.T, exec func(q string, args ...any), n int) {
	t.Helper()
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)`)
	for i := 1; i <= n; i++ {
		names, _ := fs.Glob(migrations, fmt.Sprintf("migrations/%03d_*.sql", i))
		body, err := migrations.ReadFile(names[0])
		if err != nil {
			t.Fatal(err)
		}
		exec(string(body))
		exec(`INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, 0)`, i)
	}
}

// TestUpgradeToSessionCounts: a database from before the kept session
// counts (schema 8) opens with counts of the sessions active in it, which
// the caps then read; and the triggers follow changes no store method
// makes (an API changed, active sessions deleted).
func TestUpgradeToSessionCounts(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, "fota_test_")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	migrateTo(t, exec, 8)
	exec(`INSERT INTO releases (id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256, ciphertext_size,
		ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms, manifest, signature, blob_key)
		VALUES (1, 'ecowatt', 'esp32', '1.0.4', 1, 3000, 'x', 3008, 'y', 1024, 'iv', 'k', 'rsa-2048', '', 1, 1, '\x00', '\x00', 'b')`)
	now := time.Now().UnixMilli()
	for i, sess := range []struct{ api, state string }{
		{fota.APINative, fota.SessionOpen}, {fota.APINative, fota.SessionApplied}, {fota.APINative, fota.SessionConfirmed},
		{fota.APIEcoWatt, fota.SessionDownloaded}, {fota.APIEcoWatt, fota.SessionVerified}, {fota.APIEcoWatt, fota.SessionOpen},
		{fota.APIEcoWatt, fota.SessionAbandoned}, {fota.APIEcoWatt, fota.SessionFailed},
	} {
		dev := fmt.Sprintf("d%d", i)
		exec(`INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms) VALUES ($1, 'esp32', '1.0.3', 0, '\x00', 'both', 1)`, dev)
		exec(`INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, created_ms, updated_ms)
			VALUES ($1, $2, 1, '1.0.4', $3, $4, 3, $5, $5)`, "s-"+dev, dev, sess.api, sess.state, now)
	}

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckCountsAfterUpgrade(t, s, func(q string, args ...any) { exec(strings.ReplaceAll(q, "?", "$"), args...) })
}

// TestUpgradeToDeltas: a database from before delta artifacts (schema 9)
// opens with its release and sessions as full-image ones.
func TestUpgradeToDeltas(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, "fota_test_")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	migrateTo(t, exec, 9)
	exec(`INSERT INTO releases (id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256, ciphertext_size,
		ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms, manifest, signature, blob_key)
		VALUES (1, 'ecowatt', 'esp32', '1.0.4', 1, 3000, 'x', 3008, 'y', 1024, 'iv', 'k', 'rsa-2048', '', 1, 1, '\x00', '\x00', 'b')`)
	// The id sequence moves past the row given its id, as releases
	// published through the store would have moved it.
	exec(`SELECT setval(pg_get_serial_sequence('releases', 'id'), 1)`)
	exec(`INSERT INTO devices (id, hardware, version, security_counter, psk, api, created_ms) VALUES ('old', 'esp32', '1.0.3', 0, '\x00', 'both', 1)`)
	now := time.Now().UnixMilli()
	exec(`INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, bytes_served, created_ms, updated_ms)
		VALUES ('s-failed', 'old', 1, '1.0.4', 'native', 'failed', 3, 200, $1, $1), ('s-open', 'old', 1, '1.0.4', 'native', 'open', 3, 100, $2, $2)`,
		now-1, now)

	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckDeltasAfterUpgrade(t, s)
}
