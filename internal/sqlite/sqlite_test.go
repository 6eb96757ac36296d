package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

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
