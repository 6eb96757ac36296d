// Package pgtest gives tests a PostgreSQL schema of their own on the
// database FOTA_TEST_POSTGRES_DSN names. .ci/run installs PostgreSQL and
// sets it, so in CI these tests always run: there a missing DSN fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// DSN is the test database; without one the test fails in CI and is
// skipped elsewhere, saying how to run it.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("FOTA_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("FOTA_TEST_POSTGRES_DSN is not set; .ci/run must start PostgreSQL and set it")
		}
		t.Skip("set FOTA_TEST_POSTGRES_DSN=postgres://user:pass@127.0.0.1/db to run the PostgreSQL tests")
	}
	return dsn
}

// Schema creates a schema named prefix plus random hex, dropped when the
// test ends, and returns the DSN with it as the search path.
func Schema(t testing.TB, prefix string) string {
	t.Helper()
	dsn := DSN(t)
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := prefix + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		admin.Close(context.Background())
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}
