package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestTwoReplicasOnPostgres runs two fota serve processes on one PostgreSQL
// database, with release blobs in a shared folder or in the database
// (and then nothing on disk shared at all). A device alternates between
// them request by request; one replica is killed half way and the device
// finishes on the other.
func TestTwoReplicasOnPostgres(t *testing.T) {
	t.Run("blob-folder", func(t *testing.T) {
		testTwoReplicas(t, []string{"--blobs", "shared-blobs"}, []string{"--blobs", "shared-blobs"})
	})
	t.Run("blobs-in-db", func(t *testing.T) {
		testTwoReplicas(t, []string{"--blobs", "db", "--data", "data-a"}, []string{"--blobs", "db", "--data", "data-b"})
	})
}

func testTwoReplicas(t *testing.T, argsA, argsB []string) {
	dsn := os.Getenv("FOTA_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("FOTA_TEST_POSTGRES_DSN is not set; .ci/run must start PostgreSQL and set it")
		}
		t.Skip("set FOTA_TEST_POSTGRES_DSN to run the PostgreSQL replica test")
	}
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := "fota_e2e_" + hex.EncodeToString(b[:])
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
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	db := dsn + sep + "search_path=" + schema

	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	fota(t, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "512KiB", "-o", "app.bin")
	fota(t, dir, nil, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	a := startServer(t, dir, append([]string{"--db", db}, argsA...)...)
	bsrv := startServer(t, dir, append([]string{"--db", db}, argsB...)...)
	if a.token == "" || bsrv.token != "" {
		t.Fatalf("the first replica must print the admin token and the second not (%q, %q)", a.token, bsrv.token)
	}
	// Published through A, registered through B: both see both.
	fota(t, dir, []string{"FOTA_SERVER=" + a.url, "FOTA_TOKEN=" + a.token}, "release", "publish", "app.fota")
	fota(t, dir, []string{"FOTA_SERVER=" + bsrv.url, "FOTA_TOKEN=" + a.token}, "device", "add", "--id", "rep-1", "--hardware", "esp32",
		"--version", "1.0.3", "--credentials", "rep.json")
	cred := readCredentials(t, filepath.Join(dir, "rep.json"))

	c := nativeCheckIn(t, a.url, cred)
	var ct []byte
	servers := []string{a.url, bsrv.url}
	for from, i := 0, 0; from < c.Chunks/2; from, i = from+32, i+1 {
		ct = append(ct, nativeChunks(t, servers[i%2], cred, c, from, min(from+32, c.Chunks/2))...)
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	c2 := nativeCheckIn(t, bsrv.url, cred)
	if c2.SessionID != c.SessionID {
		t.Fatalf("replica B does not know replica A's session: %s vs %s", c2.SessionID, c.SessionID)
	}
	ct = append(ct, nativeChunks(t, bsrv.url, cred, c2, c.Chunks/2, c2.Chunks)...)
	var m struct {
		IV string `json:"iv"`
	}
	manifest, _ := base64.StdEncoding.DecodeString(c2.Manifest)
	json.Unmarshal(manifest, &m)
	iv, _ := hex.DecodeString(m.IV)
	fwKey, _ := os.ReadFile(filepath.Join(dir, "keys", "firmware.key"))
	firmware, _ := os.ReadFile(filepath.Join(dir, "app.bin"))
	if fw := decrypt(t, fwKey, iv, ct); !bytes.Equal(fw, firmware) {
		t.Fatal("firmware assembled from two replicas differs")
	}
	resp, err := nativeRequest(t, bsrv.url, "POST", c2.ReportURL, cred, []byte(`{"status":"confirmed"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("report on replica B: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	list := fota(t, dir, []string{"FOTA_SERVER=" + bsrv.url, "FOTA_TOKEN=" + a.token}, "device", "list")
	if !strings.Contains(list, "rep-1") || !strings.Contains(list, "1.0.4") {
		t.Fatalf("device list on B:\n%s", list)
	}
	bsrv.stop(t)
}
