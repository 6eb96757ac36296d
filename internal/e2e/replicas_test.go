package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/pgtest"
)

// TestTwoReplicasOnPostgres runs two fota serve processes on one PostgreSQL
// database, with release blobs in a shared folder or in the database
// (and then nothing on disk shared at all). Four devices alternate between
// them request by request; one replica is killed half way through the
// rollout and every device finishes on the other.
func TestTwoReplicasOnPostgres(t *testing.T) {
	t.Run("blob-folder", func(t *testing.T) {
		testTwoReplicas(t, []string{"--blobs", "shared-blobs"}, []string{"--blobs", "shared-blobs"})
	})
	t.Run("blobs-in-db", func(t *testing.T) {
		testTwoReplicas(t, []string{"--blobs", "db", "--data", "data-a"}, []string{"--blobs", "db", "--data", "data-b"})
	})
}

func testTwoReplicas(t *testing.T, argsA, argsB []string) {
	db := pgtest.Schema(t, "fota_e2e_")

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
	adminA := []string{"FOTA_SERVER=" + a.url, "FOTA_TOKEN=" + a.token}
	adminB := []string{"FOTA_SERVER=" + bsrv.url, "FOTA_TOKEN=" + a.token}
	fota(t, dir, adminA, "release", "publish", "--rollout", "all", "app.fota")
	const devices = 4
	creds := make([]credentials, devices)
	checks := make([]nativeCheck, devices)
	cts := make([][]byte, devices)
	for d := range devices {
		id := fmt.Sprintf("rep-%d", d+1)
		fota(t, dir, adminB, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3", "--credentials", id+".json")
		creds[d] = readCredentials(t, filepath.Join(dir, id+".json"))
	}

	// Each device checks in on its own replica, then every device's
	// requests alternate between the two, interleaved across devices, with
	// v2 chunk HMACs: B hashes the release's chunks on first use, as it did
	// not publish it.
	servers := []string{a.url, bsrv.url}
	for d := range devices {
		checks[d] = nativeCheckIn(t, servers[d%2], creds[d])
	}
	half := checks[0].Chunks / 2
	for from, i := 0, 0; from < half; from, i = from+32, i+1 {
		for d := range devices {
			cts[d] = append(cts[d], nativeChunks(t, servers[(i+d)%2], creds[d], checks[d], "v2", from, min(from+32, half))...)
		}
	}

	// Replica A dies mid-rollout; every device finishes on B.
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	fwKey, _ := os.ReadFile(filepath.Join(dir, "keys", "firmware.key"))
	firmware, _ := os.ReadFile(filepath.Join(dir, "app.bin"))
	for d := range devices {
		c2 := nativeCheckIn(t, bsrv.url, creds[d])
		if c2.SessionID != checks[d].SessionID {
			t.Fatalf("device %d: replica B does not know replica A's session: %s vs %s", d+1, c2.SessionID, checks[d].SessionID)
		}
		cts[d] = append(cts[d], nativeChunks(t, bsrv.url, creds[d], c2, "v2", half, c2.Chunks)...)
		var m struct {
			IV string `json:"iv"`
		}
		manifest, _ := base64.StdEncoding.DecodeString(c2.Manifest)
		json.Unmarshal(manifest, &m)
		iv, _ := hex.DecodeString(m.IV)
		if fw := decrypt(t, fwKey, iv, cts[d]); !bytes.Equal(fw, firmware) {
			t.Fatalf("device %d: firmware assembled from two replicas differs", d+1)
		}
		resp, err := nativeRequest(t, bsrv.url, "POST", c2.ReportURL, creds[d], []byte(`{"status":"confirmed"}`))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("device %d: report on replica B: %v %v", d+1, err, resp.Status)
		}
		resp.Body.Close()
	}
	list := fota(t, dir, adminB, "device", "list")
	for d := range devices {
		if !regexp.MustCompile(fmt.Sprintf(`rep-%d\s+esp32\s+1\.0\.4\s`, d+1)).MatchString(list) {
			t.Fatalf("device rep-%d not on 1.0.4 in the device list on B:\n%s", d+1, list)
		}
	}
	bsrv.stop(t)
}

// TestRolloutHaltAcrossReplicas: a rollout made on replica A halts on
// replica B when a canary rolls back there; the other canary's download
// on A is told to stop, and no device outside the canary wave is offered
// the release on either replica.
func TestRolloutHaltAcrossReplicas(t *testing.T) {
	db := pgtest.Schema(t, "fota_e2e_")
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	fota(t, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "256KiB", "-o", "app.bin")
	fota(t, dir, nil, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	a := startServer(t, dir, "--db", db, "--blobs", "db", "--data", "data-a")
	b := startServer(t, dir, "--db", db, "--blobs", "db", "--data", "data-b")
	adminA := []string{"FOTA_SERVER=" + a.url, "FOTA_TOKEN=" + a.token}
	adminB := []string{"FOTA_SERVER=" + b.url, "FOTA_TOKEN=" + a.token}
	fota(t, dir, adminA, "release", "publish", "app.fota")
	creds := map[string]credentials{}
	for d := range 6 {
		id := fmt.Sprintf("fleet-%d", d+1)
		fota(t, dir, adminB, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3", "--credentials", id+".json")
		creds[id] = readCredentials(t, filepath.Join(dir, id+".json"))
	}
	fota(t, dir, adminA, "rollout", "create", "--release", "1.0.4", "--waves", "2,all", "--max-failures", "0")
	var show struct {
		State   string `json:"state"`
		Reason  string `json:"reason"`
		Devices []struct {
			ID   string `json:"id"`
			Wave int    `json:"wave"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(fota(t, dir, adminB, "rollout", "show", "1", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	var canaries, rest []string
	for _, m := range show.Devices {
		if m.Wave == 1 {
			canaries = append(canaries, m.ID)
		} else {
			rest = append(rest, m.ID)
		}
	}
	if len(canaries) != 2 || len(rest) != 4 {
		t.Fatalf("waves: %+v", show.Devices)
	}
	// One canary downloads on A; the other installs from B and rolls back.
	downloading := nativeCheckIn(t, a.url, creds[canaries[0]])
	nativeChunks(t, a.url, creds[canaries[0]], downloading, "v2", 0, 32)
	failing := nativeCheckIn(t, b.url, creds[canaries[1]])
	nativeChunks(t, b.url, creds[canaries[1]], failing, "v2", 0, failing.Chunks)
	resp, err := nativeRequest(t, b.url, "POST", failing.ReportURL, creds[canaries[1]], []byte(`{"status":"rolled-back","reason":"self-test failed"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("rollback report on B: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	if err := json.Unmarshal([]byte(fota(t, dir, adminA, "rollout", "show", "1", "--json")), &show); err != nil {
		t.Fatal(err)
	}
	if show.State != "halted" {
		t.Fatalf("rollout on A after the rollback on B: %s %q", show.State, show.Reason)
	}
	// A serves from a session snapshot for at most a second: then 410.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := nativeRequest(t, a.url, "GET", downloading.ChunksURL+"?from=32&count=1&mac=v2", creds[canaries[0]], nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 410 && strings.Contains(string(raw), "halted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canary downloading on A after the halt on B: %d %s", resp.StatusCode, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range rest {
		for _, url := range []string{a.url, b.url} {
			resp, err := nativeRequest(t, url, "POST", "/v1/device/check", creds[id], []byte(`{"version":"1.0.3","hardware":"esp32"}`))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || strings.Contains(string(raw), `"update":true`) {
				t.Fatalf("%s outside the canary wave, on %s: %d %s", id, url, resp.StatusCode, raw)
			}
		}
	}
	a.stop(t)
	b.stop(t)
}
