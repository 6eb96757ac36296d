package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

// testDSN is the database the tests use. .ci/run installs PostgreSQL and
// sets it, so in CI these tests always run.
func testDSN(t *testing.T) string {
	dsn := os.Getenv("FOTA_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("FOTA_TEST_POSTGRES_DSN is not set; .ci/run must start PostgreSQL and set it")
		}
		t.Skip("set FOTA_TEST_POSTGRES_DSN=postgres://user:pass@127.0.0.1/db to run the PostgreSQL tests")
	}
	return dsn
}

// freshStore opens a store in a schema of its own, dropped after the test.
func freshStore(t *testing.T, dsn string) *Store {
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := "fota_test_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		admin.Close(context.Background())
	})
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	s, err := OpenConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	dsn := testDSN(t)
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) fota.Store {
		s := freshStore(t, dsn)
		s.SetClock(c.Now)
		return s
	})
}

func TestMigrationsIdempotentAndNewerSchemaRefused(t *testing.T) {
	dsn := testDSN(t)
	s := freshStore(t, dsn)
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
