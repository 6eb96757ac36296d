package mqtt

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// refPBKDF2 is PBKDF2-HMAC-SHA512 written out from RFC 8018 section 5.2,
// independently of the crypto/pbkdf2 that mosquittoHash uses.
func refPBKDF2(password, salt []byte, iter, keyLen int) []byte {
	var out []byte
	for block := uint32(1); len(out) < keyLen; block++ {
		m := hmac.New(sha512.New, password)
		m.Write(salt)
		m.Write(binary.BigEndian.AppendUint32(nil, block))
		u := m.Sum(nil)
		t := bytes.Clone(u)
		for i := 1; i < iter; i++ {
			m = hmac.New(sha512.New, password)
			m.Write(u)
			u = m.Sum(nil)
			for j := range t {
				t[j] ^= u[j]
			}
		}
		out = append(out, t...)
	}
	return out[:keyLen]
}

// parseSeven splits a password file line into its parts, checking the
// structure mosquitto 2.x reads.
func parseSeven(t *testing.T, line string) (user string, iter int, salt, hash []byte) {
	t.Helper()
	user, rest, ok := strings.Cut(line, ":")
	if !ok {
		t.Fatalf("line %q has no ':'", line)
	}
	parts := strings.Split(rest, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		t.Fatalf("line %q: want user:$7$ITER$SALT$HASH", line)
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil {
		t.Fatalf("line %q: iterations: %v", line, err)
	}
	// Standard, padded base64, as OpenSSL's BIO_f_base64 writes it.
	if salt, err = base64.StdEncoding.Strict().DecodeString(parts[3]); err != nil || len(salt) != mosquittoSaltSize {
		t.Fatalf("line %q: salt %q: %d bytes, %v; want %d", line, parts[3], len(salt), err, mosquittoSaltSize)
	}
	if hash, err = base64.StdEncoding.Strict().DecodeString(parts[4]); err != nil || len(hash) != mosquittoHashSize {
		t.Fatalf("line %q: hash: %d bytes, %v; want %d", line, len(hash), err, mosquittoHashSize)
	}
	return user, iter, salt, hash
}

func TestMosquittoHashVector(t *testing.T) {
	// Made by mosquitto_passwd 2.0.11: mosquitto_passwd -b FILE dev-1 'correct horse battery'.
	const line = "dev-1:$7$101$HK6Wb5SOKo2I9x0d$v8NGIVW4TVrQg5R0X0phtq2zSOatj5wDBLnMnfsdtiORhbaU5T6RkFiRbTCPR7pQsE/CUefah0HT+wUsxUUwrw=="
	_, iter, salt, _ := parseSeven(t, line)
	got, err := mosquittoHash("correct horse battery", salt, iter)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(line, "dev-1:"); got != want {
		t.Errorf("mosquittoHash = %s\nmosquitto_passwd made %s", got, want)
	}
	if wrong, _ := mosquittoHash("correct horse battery!", salt, iter); wrong == got {
		t.Error("another password gave the same hash")
	}
}

func testDevices(t *testing.T) []*fota.Device {
	t.Helper()
	var ds []*fota.Device
	for _, id := range []string{"zeta-2", "alpha.1", "gone"} {
		psk, err := protocol.NewPSK()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, &fota.Device{ID: id, PSK: psk})
	}
	ds[2].Removed = time.Now()
	return ds
}

func TestMosquittoFiles(t *testing.T) {
	ds := testDevices(t)
	server := ServerAccount{Username: "fota-server", Password: "s3cret-server-password"}
	passwd, acl, err := MosquittoFiles(ds, server)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"fota-server": server.Password,
		"alpha.1":     protocol.MQTTPassword(ds[1].PSK, "alpha.1"),
		"zeta-2":      protocol.MQTTPassword(ds[0].PSK, "zeta-2"),
	}
	lines := strings.Split(strings.TrimSuffix(string(passwd), "\n"), "\n")
	var users []string
	salts := map[string]bool{}
	for _, line := range lines {
		user, iter, salt, hash := parseSeven(t, line)
		users = append(users, user)
		if iter != 101 {
			t.Errorf("%s: %d iterations, want mosquitto_passwd's 101", user, iter)
		}
		pw, ok := want[user]
		if !ok {
			t.Errorf("password file has user %q, want only %v", user, want)
			continue
		}
		if ref := refPBKDF2([]byte(pw), salt, iter, 64); !bytes.Equal(hash, ref) {
			t.Errorf("%s: hash does not verify with an independent PBKDF2-HMAC-SHA512", user)
		}
		if salts[string(salt)] {
			t.Errorf("%s: salt repeated", user)
		}
		salts[string(salt)] = true
	}
	if got, wantUsers := strings.Join(users, ","), "fota-server,alpha.1,zeta-2"; got != wantUsers {
		t.Errorf("users %s, want %s (server first, then devices by id, removed ones out)", got, wantUsers)
	}
	if bytes.Contains(passwd, []byte(server.Password)) || bytes.Contains(passwd, []byte(want["alpha.1"])) {
		t.Error("password file holds a password in clear")
	}

	const wantACL = `# mosquitto ACL made by 'fota mqtt acl': regenerate it when devices are added or removed.
# Each device reads its own notify topic; the fota server writes them; nothing else is granted.

user fota-server
topic write fota/v1/devices/+/notify

user alpha.1
topic read fota/v1/devices/alpha.1/notify

user zeta-2
topic read fota/v1/devices/zeta-2/notify
`
	if string(acl) != wantACL {
		t.Errorf("ACL:\n%s\nwant:\n%s", acl, wantACL)
	}
}

func TestMosquittoFilesRefuses(t *testing.T) {
	ds := testDevices(t)
	good := ServerAccount{Username: "fota-server", Password: "pw"}
	for _, tc := range []struct {
		name    string
		devices []*fota.Device
		server  ServerAccount
		want    string
	}{
		{"no server password", ds, ServerAccount{Username: "fota-server"}, "no password"},
		{"server name with colon", ds, ServerAccount{Username: "a:b", Password: "pw"}, "want only"},
		{"server name empty", ds, ServerAccount{Password: "pw"}, "want 1-64"},
		{"server named as a device", ds, ServerAccount{Username: "alpha.1", Password: "pw"}, "name of a device"},
		{"wildcard device id", []*fota.Device{{ID: "+"}}, good, "want only"},
		{"multi-level wildcard device id", []*fota.Device{{ID: "#"}}, good, "want only"},
		{"device id with a slash", []*fota.Device{{ID: "a/b"}}, good, "want only"},
		{"device id with a space", []*fota.Device{{ID: "a b"}}, good, "want only"},
		{"device twice", []*fota.Device{{ID: "a"}, {ID: "a"}}, good, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := MosquittoFiles(tc.devices, tc.server)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if tc.server.Password != "" && strings.Contains(err.Error(), tc.server.Password) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
