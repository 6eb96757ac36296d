package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/pgtest"
	"github.com/ecowatt/fota/internal/storetest"
)

// freshStore opens a store in a schema of its own, dropped after the test.
func freshStore(t *testing.T) *Store {
	s, err := Open(context.Background(), pgtest.Schema(t, "fota_test_"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

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
