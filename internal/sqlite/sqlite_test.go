package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	first := commits(300)
	time.Sleep(2 * checkpointEvery)
	second := commits(300)
	if second > first*3/2 {
		t.Fatalf("the WAL grew from %d to %d bytes over 300 more commits %v later: nothing checkpointed it in the background", first, second, 2*checkpointEvery)
	}
}
