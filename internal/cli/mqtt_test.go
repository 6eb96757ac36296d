package cli

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// passwdEntries reads a mosquitto password file into user → $7$ hash.
func passwdEntries(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("password file line %q has no ':'", line)
		}
		m[user] = hash
	}
	return m
}

// checkHash fails unless hash is mosquitto's $7$ hash of password.
func checkHash(t *testing.T, user, hash, password string) {
	t.Helper()
	parts := strings.Split(hash, "$")
	if len(parts) != 5 || parts[1] != "7" {
		t.Fatalf("%s: hash %q is not $7$ITER$SALT$HASH", user, hash)
	}
	iter, _ := strconv.Atoi(parts[2])
	salt, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil {
		t.Fatal(err)
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iter, 64)
	if err != nil {
		t.Fatal(err)
	}
	if base64.StdEncoding.EncodeToString(key) != parts[4] {
		t.Fatalf("%s: the password file's hash is not the hash of the expected password", user)
	}
}

func checkMode(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %04o, want 0600", path, st.Mode().Perm())
	}
}

func TestMQTTACL(t *testing.T) {
	data, store := userData(t)
	ctx := context.Background()
	psks := map[string]protocol.PSK{}
	for _, id := range []string{"alice", "bob", "carol"} {
		psk, err := protocol.NewPSK()
		if err != nil {
			t.Fatal(err)
		}
		psks[id] = psk
		if err := store.CreateDevice(ctx, &fota.Device{ID: id, Hardware: "esp32", Version: "1.0.3", PSK: psk}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.RemoveDevice(ctx, "carol"); err != nil {
		t.Fatal(err)
	}

	out := t.TempDir()
	passwd, acl := filepath.Join(out, "fota.passwd"), filepath.Join(out, "fota.acl")
	made := filepath.Join(out, "fota-server.password")
	args := []string{"mqtt", "acl", "--data", data, "--passwd", passwd, "--acl", acl}
	r := run(t, args...)
	t.Logf("fota mqtt acl said:\n%s", r.stdout)
	r.expect(t, 0, "wrote "+made, "")
	r.expect(t, 0, "password_file "+passwd+"\n", "")
	r.expect(t, 0, "acl_file "+acl+"\n", "")
	r.expect(t, 0, "allow_anonymous false", "")
	r.expect(t, 0, "2 devices and fota-server", "")
	for _, p := range []string{passwd, acl, made} {
		checkMode(t, p)
	}
	serverPW, err := os.ReadFile(made)
	if err != nil {
		t.Fatal(err)
	}
	if len(serverPW) < 32 {
		t.Fatalf("made server password %d bytes long, want at least 32", len(serverPW))
	}
	r.noSecrets(t, string(serverPW))

	entries := passwdEntries(t, passwd)
	if len(entries) != 3 {
		t.Fatalf("password file users %v, want fota-server, alice and bob", entries)
	}
	checkHash(t, "fota-server", entries["fota-server"], string(serverPW))
	for _, id := range []string{"alice", "bob"} {
		checkHash(t, id, entries[id], protocol.MQTTPassword(psks[id], id))
	}
	aclText, err := os.ReadFile(acl)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user fota-server\ntopic write fota/v1/devices/+/notify\n",
		"user alice\ntopic read fota/v1/devices/alice/notify\n", "user bob\ntopic read fota/v1/devices/bob/notify\n"} {
		if !bytes.Contains(aclText, []byte(want)) {
			t.Errorf("ACL lacks %q:\n%s", want, aclText)
		}
	}
	if bytes.Contains(aclText, []byte("carol")) {
		t.Errorf("ACL grants the removed device:\n%s", aclText)
	}

	t.Run("refuses to overwrite", func(t *testing.T) {
		before, _ := os.ReadFile(passwd)
		run(t, args...).expect(t, 1, "", "already exists")
		after, _ := os.ReadFile(passwd)
		if !bytes.Equal(before, after) {
			t.Fatal("a refused run changed the password file")
		}
		// Run again for new devices: the servers' password is kept (a new
		// one would lock every server out of the broker).
		os.Remove(passwd)
		os.Remove(acl)
		r := run(t, args...)
		r.expect(t, 0, "kept the fota servers' broker password in "+made, "")
		if kept, _ := os.ReadFile(made); !bytes.Equal(kept, serverPW) {
			t.Fatal("a second run changed the servers' broker password")
		}
		checkHash(t, "fota-server", passwdEntries(t, passwd)["fota-server"], string(serverPW))
		// Asked for a new one, it refuses to replace the old without --force.
		run(t, append(args, "--new-server-password")...).expect(t, 1, "", "already exists")
		if kept, _ := os.ReadFile(made); !bytes.Equal(kept, serverPW) {
			t.Fatal("a refused run changed the servers' broker password")
		}
	})

	t.Run("keeps the server password from a file", func(t *testing.T) {
		r := run(t, append(args, "--server-password-file", made, "--force")...)
		r.expect(t, 0, "wrote "+passwd, "")
		if strings.Contains(r.stdout, "wrote "+made) {
			t.Fatalf("rewrote the server password it was given:\n%s", r.stdout)
		}
		r.noSecrets(t, string(serverPW))
		checkHash(t, "fota-server", passwdEntries(t, passwd)["fota-server"], string(serverPW))
		checkMode(t, passwd)
	})

	t.Run("other server user, password file readable by the group", func(t *testing.T) {
		pwFile := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pwFile, []byte("a-server-password-of-ours\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(pwFile, 0o640)
		r := run(t, append(args, "--server-user", "fleet-pusher", "--server-password-file", pwFile, "--force")...)
		r.expect(t, 0, "fleet-pusher", "warning")
		r.noSecrets(t, "a-server-password-of-ours")
		checkHash(t, "fleet-pusher", passwdEntries(t, passwd)["fleet-pusher"], "a-server-password-of-ours")
	})

	t.Run("usage", func(t *testing.T) {
		run(t, "mqtt", "acl", "--data", data, "--passwd", passwd).expect(t, 2, "", "--passwd and --acl are required")
		run(t, "mqtt", "acl", "--data", data, "--passwd", passwd, "--acl", passwd).expect(t, 2, "", "same file")
		run(t, "mqtt", "acl", "--help").expect(t, 0, "fota mqtt acl --data /var/lib/fota", "")
		run(t, "mqtt", "acl", "--data", data, "--passwd", passwd, "--acl", acl, "--server-user", "a:b", "--force").
			expect(t, 1, "", "want only A-Z")
		worldReadable := filepath.Join(t.TempDir(), "open")
		os.WriteFile(worldReadable, []byte("a-server-password-of-ours"), 0o600)
		os.Chmod(worldReadable, 0o644)
		run(t, "mqtt", "acl", "--data", data, "--passwd", passwd, "--acl", acl, "--server-password-file", worldReadable, "--force").
			expect(t, 1, "", "chmod 600 "+worldReadable)
		empty := filepath.Join(t.TempDir(), "empty")
		os.WriteFile(empty, []byte("\n"), 0o600)
		run(t, "mqtt", "acl", "--data", data, "--passwd", passwd, "--acl", acl, "--server-password-file", empty, "--force").
			expect(t, 1, "", "is empty")
	})
}
