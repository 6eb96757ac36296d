package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ecowatt/fota/internal/vectors"
	"github.com/ecowatt/fota/semver"
)

// The files in testdata/vectors hold the protocol's test vectors for every
// implementation: these tests check each case against this package (and
// semver's tests check semver.vectors), the C client's tests read the same
// files. testdata/vectors/README.md describes the format.
//
// Regenerate with: go test ./protocol -run TestVectors -update
var update = flag.Bool("update", false, "regenerate testdata/vectors")

const vectorDir = "testdata/vectors"

// schema is what the cases of one file hold.
type schema struct {
	keys []string                       // every key a case may have, in file order
	need func(c *vectors.Case) []string // the keys this case must have
	hex  []string                       // keys whose values are lowercase hex
}

func all(keys ...string) func(*vectors.Case) []string {
	return func(*vectors.Case) []string { return keys }
}

var schemas = map[string]schema{
	"request-signing.vectors": {
		keys: []string{"name", "psk", "method", "uri", "device", "timestamp", "nonce", "body", "body_sha256", "canonical", "signature"},
		need: all("name", "psk", "method", "uri", "device", "timestamp", "nonce", "body", "body_sha256", "canonical", "signature"),
		hex:  []string{"psk", "body", "body_sha256", "canonical", "signature"},
	},
	"chunk-mac.vectors": {
		keys: []string{"name", "scheme", "psk", "session", "index", "data", "data_sha256", "session_key", "mac"},
		need: func(c *vectors.Case) []string {
			base := []string{"name", "scheme", "psk", "session", "index", "data", "mac"}
			if s, _ := c.Get("scheme"); s == "v2" {
				return append(base, "data_sha256", "session_key")
			}
			return base
		},
		hex: []string{"psk", "data", "data_sha256", "session_key", "mac"},
	},
	"legacy-chunk-mac.vectors": {
		keys: []string{"name", "psk", "chunk", "data", "mac"},
		need: all("name", "psk", "chunk", "data", "mac"),
		hex:  []string{"psk", "data", "mac"},
	},
	"frames.vectors": {
		keys: []string{"name", "max_data", "body", "expect", "frames", "index", "length", "mac", "data"},
		need: all("name", "max_data", "body", "expect", "frames", "index", "length", "mac", "data"),
		hex:  []string{"body", "mac", "data"},
	},
	"semver.vectors": {
		keys: []string{"name", "a", "b", "cmp", "version", "valid", "major", "minor", "patch", "prerelease", "build"},
		need: func(c *vectors.Case) []string {
			if _, ok := c.Get("a"); ok {
				return []string{"name", "a", "b", "cmp"}
			}
			if v, _ := c.Get("valid"); v == "true" {
				return []string{"name", "version", "valid", "major", "minor", "patch", "prerelease", "build"}
			}
			return []string{"name", "version", "valid"}
		},
	},
	"http-date.vectors": {
		keys: []string{"name", "date", "valid", "unix"},
		need: validNeeds("date"),
	},
	"rfc3339.vectors": {
		keys: []string{"name", "time", "valid", "unix"},
		need: validNeeds("time"),
	},
	"mqtt-password.vectors": {
		keys: []string{"name", "psk", "device", "topic", "password"},
		need: all("name", "psk", "device", "topic", "password"),
		hex:  []string{"psk", "password"},
	},
}

func validNeeds(text string) func(*vectors.Case) []string {
	return func(c *vectors.Case) []string {
		if v, _ := c.Get("valid"); v == "true" {
			return []string{"name", text, "valid", "unix"}
		}
		return []string{"name", text, "valid"}
	}
}

// readVectors reads a file of the folder, failing the test on any
// departure from the format or the file's schema.
func readVectors(t *testing.T, file string) []vectors.Case {
	t.Helper()
	cs, err := vectors.ReadFile(filepath.Join(vectorDir, file))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatalf("%s: no cases", file)
	}
	s, ok := schemas[file]
	if !ok {
		t.Fatalf("%s: no schema: add the file to schemas", file)
	}
	for _, c := range cs {
		need := s.need(&c)
		at := -1
		for _, f := range c.Fields {
			i := slices.Index(s.keys, f.Key)
			if i < 0 {
				t.Fatalf("%s:%d: case %q: unknown key %q", file, c.Line, c.Name(), f.Key)
			}
			if i < at {
				t.Fatalf("%s:%d: case %q: %s out of order (want %v)", file, c.Line, c.Name(), f.Key, s.keys)
			}
			at = i
			if !slices.Contains(need, f.Key) {
				t.Fatalf("%s:%d: case %q: %s does not belong in such a case (it has %v)", file, c.Line, c.Name(), f.Key, need)
			}
			if slices.Contains(s.hex, f.Key) && (len(f.Value)%2 != 0 || strings.Trim(f.Value, "0123456789abcdef") != "") {
				t.Fatalf("%s:%d: case %q: %s is not lowercase hex of whole bytes", file, c.Line, c.Name(), f.Key)
			}
			if f.Key == "valid" && f.Value != "true" && f.Value != "false" {
				t.Fatalf("%s:%d: case %q: valid is %q, want true or false", file, c.Line, c.Name(), f.Value)
			}
		}
		for _, k := range need {
			if _, ok := c.Get(k); !ok {
				t.Fatalf("%s:%d: case %q: no %s", file, c.Line, c.Name(), k)
			}
		}
	}
	return cs
}

func mustHex(t *testing.T, c *vectors.Case, key string) []byte {
	t.Helper()
	b, err := c.Hex(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustInt(t *testing.T, c *vectors.Case, key string) int64 {
	t.Helper()
	n, err := c.Int(key)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustGet(t *testing.T, c *vectors.Case, key string) string {
	t.Helper()
	v, ok := c.Get(key)
	if !ok {
		t.Fatalf("case %q: no %s", c.Name(), key)
	}
	return v
}

func hmacSHA256(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func pskOf(t *testing.T, c *vectors.Case) PSK {
	t.Helper()
	k, err := ParsePSK(mustGet(t, c, "psk"))
	if err != nil {
		t.Fatalf("case %q: %v", c.Name(), err)
	}
	return k
}

// TestVectors: every file in the folder keeps to the format and to its
// schema (no unknown or missing keys, hex where bytes go), and every
// schema has its file.
func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*"))
	seen := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "README.md" {
			continue
		}
		if !strings.HasSuffix(name, ".vectors") {
			t.Errorf("%s: only NAME.vectors and README.md belong in %s", name, vectorDir)
			continue
		}
		readVectors(t, name)
		seen[name] = true
	}
	for name := range schemas {
		if !seen[name] {
			t.Errorf("%s is missing: go test ./protocol -run TestVectors -update", name)
		}
	}
	readme, err := os.ReadFile(filepath.Join(vectorDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range schemas {
		if !bytes.Contains(readme, []byte("`"+name+"`")) {
			t.Errorf("README.md does not describe %s", name)
		}
	}
}

func TestVectorsRequestSigning(t *testing.T) {
	for _, c := range readVectors(t, "request-signing.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			psk := pskOf(t, &c)
			method, uri, device := mustGet(t, &c, "method"), mustGet(t, &c, "uri"), mustGet(t, &c, "device")
			ts, nonce := mustGet(t, &c, "timestamp"), mustGet(t, &c, "nonce")
			body := mustHex(t, &c, "body")
			if sum := sha256.Sum256(body); !bytes.Equal(sum[:], mustHex(t, &c, "body_sha256")) {
				t.Fatalf("body_sha256 is not the SHA-256 of body (%x)", sum)
			}
			canonical := CanonicalRequest(method, uri, device, ts, nonce, sha256.Sum256(body))
			want := string(mustHex(t, &c, "canonical"))
			if canonical != want {
				t.Fatalf("canonical request\n%q\nwant\n%q", canonical, want)
			}
			// As docs/PROTOCOL.md spells it.
			if spec := strings.Join([]string{"fota-request-v1", method, uri, device, ts, nonce, hex.EncodeToString(mustHex(t, &c, "body_sha256"))}, "\n"); spec != want {
				t.Fatalf("canonical request\n%q\nis not the spec's\n%q", want, spec)
			}
			if mac := RequestMAC(psk, canonical); !bytes.Equal(mac[:], mustHex(t, &c, "signature")) {
				t.Fatalf("signature %x", mac)
			}
			if !bytes.Equal(hmacSHA256(psk[:], []byte(want)), mustHex(t, &c, "signature")) {
				t.Fatal("signature is not HMAC-SHA256(psk, canonical)")
			}
			if !ValidDeviceID(device) || !ValidNonce(nonce) {
				t.Fatalf("device %q or nonce %q is not valid", device, nonce)
			}
			// SignRequest signs the URI as sent, the case's.
			req, err := http.NewRequest(method, "http://fota.example"+uri, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if err := SignRequest(req, device, psk, body, time.Unix(mustInt(t, &c, "timestamp"), 0)); err != nil {
				t.Fatal(err)
			}
			mac := RequestMAC(psk, CanonicalRequest(method, uri, device, req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderNonce), sha256.Sum256(body)))
			if req.Header.Get(HeaderTimestamp) != ts || req.Header.Get(HeaderSignature) != hex.EncodeToString(mac[:]) {
				t.Fatalf("SignRequest does not sign %s as the case does: %v", uri, req.Header)
			}
		})
	}
}

func TestVectorsChunkMAC(t *testing.T) {
	for _, c := range readVectors(t, "chunk-mac.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			scheme, err := ParseChunkMACScheme(mustGet(t, &c, "scheme"))
			if err != nil || string(scheme) != mustGet(t, &c, "scheme") {
				t.Fatalf("scheme %q: %v", mustGet(t, &c, "scheme"), err)
			}
			psk, session, index, data := pskOf(t, &c), mustGet(t, &c, "session"), int(mustInt(t, &c, "index")), mustHex(t, &c, "data")
			want := mustHex(t, &c, "mac")
			if got := ChunkMAC(psk, session, scheme, index, data); !bytes.Equal(got[:], want) {
				t.Fatalf("ChunkMAC %x", got)
			}
			// As docs/PROTOCOL.md spells it.
			be := binary.BigEndian.AppendUint32(nil, uint32(index))
			if scheme == ChunkMACv1 {
				if !bytes.Equal(hmacSHA256(psk[:], []byte("fota-chunk-v1\n"+session+"\n"), be, data), want) {
					t.Fatal(`mac is not HMAC-SHA256(psk, "fota-chunk-v1\n" || session || "\n" || index || data)`)
				}
				return
			}
			digest := sha256.Sum256(data)
			if !bytes.Equal(digest[:], mustHex(t, &c, "data_sha256")) {
				t.Fatalf("data_sha256 is not the SHA-256 of data (%x)", digest)
			}
			key := hmacSHA256(psk[:], []byte("fota-chunk-v2\n"+session))
			if !bytes.Equal(key, mustHex(t, &c, "session_key")) {
				t.Fatalf("session_key is not HMAC-SHA256(psk, \"fota-chunk-v2\\n\" || session) (%x)", key)
			}
			if !bytes.Equal(hmacSHA256(key, be, digest[:]), want) {
				t.Fatal("mac is not HMAC-SHA256(session_key, index || data_sha256)")
			}
			// A server with the digests gets the same.
			var out [32]byte
			NewChunkMACer(psk, session, scheme).MACDigest(index, &digest, &out)
			if !bytes.Equal(out[:], want) {
				t.Fatalf("MACDigest %x", out)
			}
		})
	}
}

func TestVectorsLegacyChunkMAC(t *testing.T) {
	for _, c := range readVectors(t, "legacy-chunk-mac.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			data, want := mustHex(t, &c, "data"), mustHex(t, &c, "mac")
			got := LegacyChunkMAC(pskOf(t, &c), int(mustInt(t, &c, "chunk")), data)
			if !bytes.Equal(got[:], want) {
				t.Fatalf("LegacyChunkMAC %x", got)
			}
			// As docs/PROTOCOL.md spells it: keyed with the hex text.
			if !bytes.Equal(hmacSHA256([]byte(mustGet(t, &c, "psk")), data, []byte(mustGet(t, &c, "chunk"))), want) {
				t.Fatal("mac is not HMAC-SHA256(psk hex text, data || decimal chunk number)")
			}
		})
	}
}

// frameList parses a frames case's lists: index and length are decimal
// numbers separated by single spaces, mac and data the frames' bytes one
// after another.
type frameList struct {
	index, length []int
	mac, data     []byte
}

func (l frameList) frame(i int, dataOff int) Frame {
	f := Frame{Index: l.index[i], Data: l.data[dataOff : dataOff+l.length[i]]}
	copy(f.MAC[:], l.mac[32*i:])
	return f
}

func parseInts(t *testing.T, s string) []int {
	t.Helper()
	if s == "" {
		return nil
	}
	var out []int
	for _, f := range strings.Split(s, " ") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("list %q: %v", s, err)
		}
		out = append(out, n)
	}
	return out
}

func TestVectorsFrames(t *testing.T) {
	for _, c := range readVectors(t, "frames.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			n := int(mustInt(t, &c, "frames"))
			l := frameList{index: parseInts(t, mustGet(t, &c, "index")), length: parseInts(t, mustGet(t, &c, "length")),
				mac: mustHex(t, &c, "mac"), data: mustHex(t, &c, "data")}
			total := 0
			for _, x := range l.length {
				total += x
			}
			if len(l.index) != n || len(l.length) != n || len(l.mac) != 32*n || len(l.data) != total {
				t.Fatalf("lists disagree with frames: %d", n)
			}
			expect := mustGet(t, &c, "expect")
			if expect != "ok" && expect != "malformed" {
				t.Fatalf("expect %q, want ok or malformed", expect)
			}
			body, maxData := mustHex(t, &c, "body"), int(mustInt(t, &c, "max_data"))
			for how, r := range map[string]io.Reader{"whole": bytes.NewReader(body), "a byte a read": iotest.OneByteReader(bytes.NewReader(body))} {
				fr := NewFrameReader(r, maxData, 0)
				off := 0
				for i := range n {
					f, err := fr.Next()
					want := l.frame(i, off)
					off += l.length[i]
					if err != nil || f.Index != want.Index || f.MAC != want.MAC || !bytes.Equal(f.Data, want.Data) {
						t.Fatalf("%s: frame %d: index %d, %d bytes, %v; want index %d, %d bytes", how, i, f.Index, len(f.Data), err, want.Index, len(want.Data))
					}
				}
				_, err := fr.Next()
				switch {
				case expect == "ok" && err != io.EOF:
					t.Fatalf("%s: after the frames: %v, want the end", how, err)
				case expect == "malformed" && !errors.Is(err, ErrFrame):
					t.Fatalf("%s: after the frames: %v, want ErrFrame", how, err)
				}
			}
		})
	}
}

func TestVectorsHTTPDate(t *testing.T) {
	for _, c := range readVectors(t, "http-date.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			date := mustGet(t, &c, "date")
			got, err := http.ParseTime(date)
			if mustGet(t, &c, "valid") == "false" {
				if err == nil {
					t.Fatalf("%q parses, to %v", date, got)
				}
				return
			}
			if err != nil || got.Unix() != mustInt(t, &c, "unix") {
				t.Fatalf("%q: %d, %v", date, got.Unix(), err)
			}
			// It is what Go's net/http writes in Date.
			if w := got.UTC().Format(http.TimeFormat); w != date {
				t.Fatalf("net/http writes %q", w)
			}
		})
	}
}

func TestVectorsRFC3339(t *testing.T) {
	for _, c := range readVectors(t, "rfc3339.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			text := mustGet(t, &c, "time")
			quoted, _ := json.Marshal(text)
			var got CheckResponse
			err := json.Unmarshal([]byte(`{"install_after":`+string(quoted)+`}`), &got)
			if mustGet(t, &c, "valid") == "false" {
				if err == nil {
					t.Fatalf("%q decodes, to %v", text, got.InstallAfter)
				}
				return
			}
			if err != nil || got.InstallAfter.Unix() != mustInt(t, &c, "unix") {
				t.Fatalf("%q: %d, %v", text, got.InstallAfter.Unix(), err)
			}
			// It is what the server writes: the time in UTC, encoded.
			w, _ := json.Marshal(CheckResponse{InstallAfter: got.InstallAfter.UTC()})
			if !bytes.Contains(w, []byte(`"install_after":`+string(quoted))) {
				t.Fatalf("the server writes %s", w)
			}
		})
	}
}

// ---- Generating the files ----

// Fixed test keys: public test material, never a device's.
var (
	vecPSKA = func() (k PSK) {
		for i := range k {
			k[i] = byte(i)
		}
		return k
	}()
	vecPSKB = func() (k PSK) {
		for i := range k {
			k[i] = 0x0f
		}
		return k
	}()
	vecPSKC = PSK(sha256.Sum256([]byte("fota test vectors: not a device key")))
)

func generateVectors(t *testing.T) {
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(file string, header []string, cases []*vectors.Case, comments map[string][]string) {
		t.Helper()
		header = append([]string{"Generated by: go test ./protocol -run TestVectors -update (do not edit)",
			"Format: README.md in this folder.", ""}, header...)
		b, err := vectors.Format(header, cases, comments)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := os.WriteFile(filepath.Join(vectorDir, file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	genRequestSigning(write)
	genChunkMAC(write)
	genLegacyChunkMAC(write)
	genFrames(t, write)
	genSemver(write)
	genHTTPDate(t, write)
	genRFC3339(t, write)
	genMQTTPassword(write)
}

func genMQTTPassword(write writeFunc) {
	var cases []*vectors.Case
	for _, r := range []struct {
		name, device string
		psk          PSK
	}{
		{"ecowatt", "ESP32_EcoWatt_Smart", vecPSKA},
		{"short-id", "d1", vecPSKB},
		{"dots-and-dashes", "site-7.inverter_02", vecPSKC},
		{"longest-id", strings.Repeat("Z", 64), vecPSKA},
	} {
		cases = append(cases, vectors.New(r.name).AddHex("psk", r.psk[:]).Add("device", r.device).
			Add("topic", NotifyTopic(r.device)).Add("password", MQTTPassword(r.psk, r.device)))
	}
	write("mqtt-password.vectors", []string{
		"MQTT push (docs/PROTOCOL.md, \"Push: MQTT notifications\").",
		"  psk       the device key, 32 bytes",
		"  device    the device id: the MQTT user name and client id",
		"  topic     the one topic the device may subscribe to",
		"  password  the MQTT password: lowercase hex of",
		"            HMAC-SHA256(psk, \"fota-mqtt-v1\\n\" || device), as text",
	}, cases, nil)
}

func TestVectorsMQTTPassword(t *testing.T) {
	for _, c := range readVectors(t, "mqtt-password.vectors") {
		t.Run(c.Name(), func(t *testing.T) {
			device := mustGet(t, &c, "device")
			if got := MQTTPassword(pskOf(t, &c), device); got != mustGet(t, &c, "password") {
				t.Fatalf("MQTTPassword = %s", got)
			}
			if got := NotifyTopic(device); got != mustGet(t, &c, "topic") {
				t.Fatalf("NotifyTopic = %s", got)
			}
			// As docs/PROTOCOL.md spells it.
			psk := pskOf(t, &c)
			if hex.EncodeToString(hmacSHA256(psk[:], []byte("fota-mqtt-v1\n"+device))) != mustGet(t, &c, "password") {
				t.Fatal(`password is not hex(HMAC-SHA256(psk, "fota-mqtt-v1\n" || device))`)
			}
		})
	}
}

type writeFunc func(file string, header []string, cases []*vectors.Case, comments map[string][]string)

func genRequestSigning(write writeFunc) {
	const session = "9f2c4e1a7b3d5c6e8f0a1b2c3d4e5f60"
	check, _ := json.Marshal(CheckRequest{Version: "1.0.3", Hardware: "esp32", SecurityCounter: 2,
		Inventory: &Inventory{Chip: "esp32", SlotSize: 1572864, FreeFlash: 1310720, AgentVersion: "0.1.0"}})
	report, _ := json.Marshal(Report{Status: "failed", Reason: "image sha256 mismatch"})
	type in struct {
		name                           string
		psk                            PSK
		method, uri, device, ts, nonce string
		body                           []byte
	}
	var cases []*vectors.Case
	comments := map[string][]string{}
	for _, r := range []in{
		{"get-chunks-v2", vecPSKA, "GET", "/v1/device/sessions/" + session + "/chunks?from=16&count=16&mac=v2", "ESP32_EcoWatt_Smart", "1777777777", "0123456789abcdef0123456789abcdef", nil},
		{"get-chunks-v1", vecPSKA, "GET", "/v1/device/sessions/" + session + "/chunks?from=0&count=1", "ESP32_EcoWatt_Smart", "1777777778", "fedcba9876543210fedcba9876543210", nil},
		{"post-check", vecPSKC, "POST", "/v1/device/check", "dev-1", "1800000000", "Nonce_with-every-kind_0123456789", check},
		{"post-report", vecPSKC, "POST", "/v1/device/sessions/" + session + "/report", "dev-1", "1800000060", "00000000000000000000000000000001", report},
		{"post-empty-body", vecPSKB, "POST", "/v1/device/check", "a.b", "1800000000", "0000000000000000", []byte{}},
		{"get-macs-long-nonce-short-timestamp", vecPSKB, "GET", "/v1/device/sessions/" + session + "/macs?from=0&count=32768&mac=v2",
			strings.Repeat("d", 64), "999999999", strings.Repeat("n", 64), nil},
	} {
		sum := sha256.Sum256(r.body)
		canonical := CanonicalRequest(r.method, r.uri, r.device, r.ts, r.nonce, sum)
		mac := RequestMAC(r.psk, canonical)
		c := vectors.New(r.name).AddHex("psk", r.psk[:]).Add("method", r.method).Add("uri", r.uri).Add("device", r.device).
			Add("timestamp", r.ts).Add("nonce", r.nonce).AddHex("body", r.body).AddHex("body_sha256", sum[:]).
			AddHex("canonical", []byte(canonical)).AddHex("signature", mac[:])
		cases = append(cases, c)
		comments[r.name] = []string{"canonical: " + strings.ReplaceAll(canonical, "\n", `\n`)}
		if len(r.body) > 0 {
			comments[r.name] = append(comments[r.name], "body: "+string(r.body))
		}
	}
	write("request-signing.vectors", []string{
		"Native API request signatures (docs/PROTOCOL.md, \"Authenticating a request\").",
		"  psk         the device key, 32 bytes",
		"  method, uri, device, timestamp, nonce: as sent (uri: path and query)",
		"  body        the request body (empty: no body)",
		"  body_sha256 SHA-256 of body",
		"  canonical   the canonical request: 7 lines joined by \\n, no final newline",
		"  signature   HMAC-SHA256(psk, canonical): X-Fota-Signature, in lowercase hex",
	}, cases, comments)
}

func genChunkMAC(write writeFunc) {
	big := make([]byte, 1024)
	for i := range big {
		big[i] = byte(i*7 + 3)
	}
	type in struct {
		name    string
		psk     PSK
		session string
		index   int
		data    []byte
	}
	var cases []*vectors.Case
	comments := map[string][]string{}
	for _, scheme := range ChunkMACSchemes {
		for _, r := range []in{
			{"index-0", vecPSKA, "9f2c4e1a7b3d5c6e8f0a1b2c3d4e5f60", 0, []byte("first chunk")},
			{"index-258", vecPSKB, "sess-1", 258, []byte("chunk bytes")},
			{"index-70000", vecPSKA, "9f2c4e1a7b3d5c6e8f0a1b2c3d4e5f60", 70000, []byte("a chunk far into a release")},
			{"index-16909060", vecPSKC, "0123456789abcdef0123456789abcdef", 0x01020304, []byte("every index byte differs")},
			{"one-byte", vecPSKC, "0123456789abcdef0123456789abcdef", 7, []byte{0xa5}},
			{"1024-bytes", vecPSKC, "0123456789abcdef0123456789abcdef", 12, big},
		} {
			name := string(scheme) + "-" + r.name
			mac := ChunkMAC(r.psk, r.session, scheme, r.index, r.data)
			c := vectors.New(name).Add("scheme", string(scheme)).AddHex("psk", r.psk[:]).Add("session", r.session).
				AddInt("index", int64(r.index)).AddHex("data", r.data)
			idx := binary.BigEndian.AppendUint32(nil, uint32(r.index))
			if scheme == ChunkMACv2 {
				digest := sha256.Sum256(r.data)
				k := hmac.New(sha256.New, r.psk[:])
				k.Write([]byte("fota-chunk-v2\n" + r.session))
				c.AddHex("data_sha256", digest[:]).AddHex("session_key", k.Sum(nil))
				comments[name] = []string{"HMAC-SHA256(session_key, " + hex.EncodeToString(idx) + " || data_sha256)"}
			} else {
				comments[name] = []string{`HMAC-SHA256(psk, "fota-chunk-v1\n` + r.session + `\n" || ` + hex.EncodeToString(idx) + " || data)"}
			}
			cases = append(cases, c.AddHex("mac", mac[:]))
		}
	}
	write("chunk-mac.vectors", []string{
		"Native API chunk HMACs (docs/PROTOCOL.md, chunks answer: v1 and v2).",
		"  scheme      v1 or v2",
		"  psk         the device key, 32 bytes",
		"  session     the session id, as text",
		"  index       the chunk index, decimal (uint32 big endian in the MAC)",
		"  data        the chunk's bytes",
		"  data_sha256 (v2) SHA-256 of data",
		"  session_key (v2) HMAC-SHA256(psk, \"fota-chunk-v2\\n\" || session)",
		"  mac         the chunk HMAC, as a frame carries it",
	}, cases, comments)
}

func genLegacyChunkMAC(write writeFunc) {
	big := make([]byte, 1024)
	for i := range big {
		big[i] = byte(255 - i)
	}
	type in struct {
		name  string
		psk   PSK
		chunk int
		data  []byte
	}
	var cases []*vectors.Case
	comments := map[string][]string{}
	for _, r := range []in{
		{"chunk-0", vecPSKA, 0, []byte("first chunk")},
		{"chunk-12", vecPSKB, 12, []byte("chunk bytes")},
		{"chunk-100", vecPSKC, 100, []byte{0x00, 0xff, 0x10}},
		{"chunk-7-1024-bytes", vecPSKC, 7, big},
	} {
		mac := LegacyChunkMAC(r.psk, r.chunk, r.data)
		cases = append(cases, vectors.New(r.name).Add("psk", r.psk.Hex()).AddInt("chunk", int64(r.chunk)).AddHex("data", r.data).AddHex("mac", mac[:]))
		comments[r.name] = []string{`HMAC-SHA256(key: the 64 characters "` + r.psk.Hex() + `", message: data || "` + strconv.Itoa(r.chunk) + `")`}
	}
	write("legacy-chunk-mac.vectors", []string{
		"EcoWatt-compatible API chunk HMACs (docs/PROTOCOL.md, POST /ota/chunk).",
		"  psk    the device key's text form: HMAC_PSK. The HMAC key is these 64",
		"         ASCII characters (lowercase), not the 32 bytes they spell",
		"  chunk  the chunk number, decimal",
		"  data   the chunk's bytes",
		"  mac    HMAC-SHA256(psk text, data || chunk number in decimal ASCII)",
	}, cases, comments)
}

func genFrames(t *testing.T, write writeFunc) {
	type frame struct {
		index int
		data  []byte
	}
	mac := func(index int) [32]byte { return sha256.Sum256([]byte("frame mac " + strconv.Itoa(index))) }
	enc := func(fs ...frame) []byte {
		var b []byte
		for _, f := range fs {
			m := mac(f.index)
			b = append(AppendFrameHeader(b, f.index, len(f.data), &m), f.data...)
		}
		return b
	}
	header := func(index int, length uint32) []byte {
		m := mac(index)
		return append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(index)), length), m[:]...)
	}
	hello, hi := frame{7, []byte("hello")}, frame{8, []byte("hi")}
	two := enc(hello, hi)
	full := frame{3, bytes.Repeat([]byte{0x5a}, 16)}
	type in struct {
		name    string
		comment string
		maxData int
		body    []byte
	}
	var cases []*vectors.Case
	comments := map[string][]string{}
	for _, r := range []in{
		{"two-frames", "chunks 7 and 8", 1024, two},
		{"empty-body", "no frames: a clean end (a client asking for chunks treats it as an empty answer)", 1024, nil},
		{"length-equals-max-data", "a frame of exactly max_data bytes", 16, enc(full)},
		{"index-order-not-checked", "framing does not check indexes: the client compares each with the chunk it expects", 1024, enc(frame{3, []byte("c")}, frame{1, []byte("a")})},
		{"index-16909060", "index bytes 01 02 03 04", 1024, enc(frame{0x01020304, []byte("x")})},
		{"truncated-header", "10 bytes of a 40-byte header", 1024, two[:10]},
		{"truncated-second-header", "one frame, then 39 bytes of the next header", 1024, two[:FrameHeaderSize+5+39]},
		{"truncated-data", "the header says 5 bytes, 3 follow", 1024, two[:FrameHeaderSize+3]},
		{"length-zero", "a frame of 0 bytes", 1024, header(1, 0)},
		{"length-over-max-data", "17 bytes, max_data 16 (all 17 present)", 16, append(header(3, 17), bytes.Repeat([]byte{0x5a}, 17)...)},
		{"length-2-pow-31", "length 0x80000000: negative as an int32", 1024, append(header(0, 1<<31), make([]byte, 64)...)},
		{"length-ffffffff", "length 0xffffffff", 1024, append(header(0, 0xffffffff), make([]byte, 64)...)},
		{"trailing-garbage", "two good frames, then 3 stray bytes", 1024, append(bytes.Clone(two), 1, 2, 3)},
	} {
		// What the frames are comes from the reader itself.
		fr := NewFrameReader(bytes.NewReader(r.body), r.maxData, 0)
		var index, length []string
		var macs, data []byte
		expect := "ok"
		for {
			f, err := fr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrFrame) {
					t.Fatalf("%s: %v", r.name, err)
				}
				expect = "malformed"
				break
			}
			index = append(index, strconv.Itoa(f.Index))
			length = append(length, strconv.Itoa(len(f.Data)))
			macs = append(macs, f.MAC[:]...)
			data = append(data, f.Data...)
		}
		cases = append(cases, vectors.New(r.name).AddInt("max_data", int64(r.maxData)).AddHex("body", r.body).Add("expect", expect).
			AddInt("frames", int64(len(index))).Add("index", strings.Join(index, " ")).Add("length", strings.Join(length, " ")).
			AddHex("mac", macs).AddHex("data", data))
		comments[r.name] = []string{r.comment}
	}
	write("frames.vectors", []string{
		"Native API chunks answers (docs/PROTOCOL.md, chunks answer; protocol/frame.go's",
		"FrameReader): frames of uint32 BE index, uint32 BE length, 32-byte MAC, data.",
		"  max_data  the largest data length the reader accepts (the chunk size)",
		"  body      the answer's bytes",
		"  expect    ok: the frames, then a clean end of the body;",
		"            malformed: the frames, then an error (a cut or bad frame)",
		"  frames    how many frames come before the end or the error",
		"  index     their indexes, decimal, separated by single spaces",
		"  length    their data lengths, likewise",
		"  mac       their MACs, 32 bytes each, one after another",
		"  data      their data, one after another",
		"A length of 0 or over max_data is malformed; so is a body cut anywhere",
		"but between frames. The MACs here are arbitrary bytes: framing does not",
		"check them (chunk-mac.vectors does).",
	}, cases, comments)
}

func genSemver(write writeFunc) {
	pairs := [][2]string{
		// The precedence chain of the SemVer 2.0.0 specification, pair by pair.
		{"1.0.0-alpha", "1.0.0-alpha.1"}, {"1.0.0-alpha.1", "1.0.0-alpha.beta"}, {"1.0.0-alpha.beta", "1.0.0-beta"},
		{"1.0.0-beta", "1.0.0-beta.2"}, {"1.0.0-beta.2", "1.0.0-beta.11"}, {"1.0.0-beta.11", "1.0.0-rc.1"},
		{"1.0.0-rc.1", "1.0.0"}, {"1.0.0", "2.0.0"}, {"2.0.0", "2.1.0"}, {"2.1.0", "2.1.1"},
		// And the other way round.
		{"1.0.0", "1.0.0-rc.1"}, {"1.0.0-beta.11", "1.0.0-beta.2"}, {"2.1.1", "2.1.0"},
		// Numbers, not strings.
		{"1.0.9", "1.0.10"}, {"1.9.0", "1.10.0"}, {"9.0.0", "10.0.0"}, {"1.0.10", "1.0.9"},
		{"18446744073709551615.0.0", "18446744073709551614.0.0"},
		// Pre-release identifiers: numeric ones below alphanumeric ones,
		// numeric ones by value, alphanumeric ones in ASCII order.
		{"1.0.0-1", "1.0.0-a"}, {"1.0.0-a", "1.0.0-1"}, {"1.0.0-2", "1.0.0-10"}, {"1.0.0-a10", "1.0.0-a9"},
		{"1.0.0-A", "1.0.0-a"}, {"1.0.0-alpha-1", "1.0.0-alpha.1"}, {"1.0.0-0a", "1.0.0-1"},
		{"1.0.0-rc.1", "1.0.0-rc.1.0"}, {"1.0.0-99999999999999999999", "1.0.0-100000000000000000000"},
		{"1.0.0-0", "0.9.9"},
		// Equal, build metadata ignored.
		{"1.2.3", "1.2.3"}, {"1.2.3+build.5", "1.2.3"}, {"1.0.0+a", "1.0.0+b"}, {"1.0.0-rc.1+b.1", "1.0.0-rc.1+b.2"},
		{"1.0.0-rc.1", "1.0.0-rc.1"},
	}
	valid := []string{
		"0.0.0", "1.2.3", "1.0.0-0", "1.0.0-0a", "1.0.0-x-y-z.--", "1.0.0+01", "1.0.0+build.01", "1.2.3-rc.1+build.5",
		"1.0.0-alpha+001", "1.0.0+20130313144700", "18446744073709551615.18446744073709551615.18446744073709551615",
		"1.0.0-" + strings.Repeat("a", semver.MaxLength-6),
	}
	invalid := []string{
		"", "1", "1.0", "v1.0.0", "V1.0.0", "1.0.0.0", "01.0.0", "1.00.0", "1.0.01", "1.0.0-", "1.0.0+", "1.0.0-01",
		"1.0.0-rc.01", "1.0.0-a..b", "1.0.0-a.", "1.0.0-.a", "1.0.0+a..b", "1.0.0-a_b", "1.0.0-a b", "1.0.0+a+b",
		"1.0.0-+", "1.0.x", "-1.0.0", "1.-0.0", "1..0", "1.0.0-rc/1", "1.0.99999999999999999999",
		"18446744073709551616.0.0", "1.0.0-" + strings.Repeat("a", semver.MaxLength-5),
	}
	var cases []*vectors.Case
	for i, p := range pairs {
		cmp := semver.Compare(semver.MustParse(p[0]), semver.MustParse(p[1]))
		cases = append(cases, vectors.New("cmp-"+strconv.Itoa(i+1)).Add("a", p[0]).Add("b", p[1]).AddInt("cmp", int64(cmp)))
	}
	for i, s := range append(valid, invalid...) {
		v, err := semver.Parse(s)
		c := vectors.New("parse-"+strconv.Itoa(i+1)).Add("version", s).Add("valid", strconv.FormatBool(err == nil))
		if err == nil {
			c.Add("major", strconv.FormatUint(v.Major, 10)).Add("minor", strconv.FormatUint(v.Minor, 10)).
				Add("patch", strconv.FormatUint(v.Patch, 10)).Add("prerelease", strings.Join(v.Pre, ".")).Add("build", v.Build)
		}
		cases = append(cases, c)
	}
	write("semver.vectors", []string{
		"Versions: Semantic Versioning 2.0.0 as package semver parses and orders them",
		"(docs/PROTOCOL.md: versions are SemVer, ordered by precedence).",
		"Comparisons:",
		"  a, b     two valid versions",
		"  cmp      -1, 0 or 1 as a is older than, the same as, or newer than b",
		"Parsing:",
		"  version  a string (may be empty)",
		"  valid    true or false",
		"  major, minor, patch  (valid) decimal, up to 2^64-1",
		"  prerelease, build    (valid) the parts after - and +, may be empty",
		"Versions are at most 128 characters; no leading v; no leading zeros in",
		"numbers or numeric pre-release identifiers; identifiers [0-9A-Za-z-]+.",
	}, cases, nil)
}

func genHTTPDate(t *testing.T, write writeFunc) {
	var cases []*vectors.Case
	for _, r := range []struct {
		name string
		unix int64
	}{
		{"rfc9110-example", 784111777}, {"server-2026", time.Date(2026, 5, 2, 1, 0, 0, 0, time.UTC).Unix()},
		{"leap-day", time.Date(2000, 2, 29, 12, 0, 0, 0, time.UTC).Unix()}, {"unix-1e9", 1_000_000_000},
		{"past-int32", 1 << 31}, {"end-of-2099", time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC).Unix()},
	} {
		date := time.Unix(r.unix, 0).UTC().Format(http.TimeFormat)
		got, err := http.ParseTime(date)
		if err != nil || got.Unix() != r.unix {
			t.Fatalf("%s: %q: %v", r.name, date, err)
		}
		cases = append(cases, vectors.New(r.name).Add("date", date).Add("valid", "true").AddInt("unix", r.unix))
	}
	for _, r := range []struct{ name, date string }{{"not-a-date", "not a date"}, {"cut-short", "Sun, 06 Nov 1994 08:49"}} {
		if _, err := http.ParseTime(r.date); err == nil {
			t.Fatalf("%s: %q parses", r.name, r.date)
		}
		cases = append(cases, vectors.New(r.name).Add("date", r.date).Add("valid", "false"))
	}
	write("http-date.vectors", []string{
		"The Date header of answers (docs/PROTOCOL.md, \"The device clock\"), in",
		"IMF-fixdate, the form Go's net/http writes: Sun, 06 Nov 1994 08:49:37 GMT.",
		"  date   the header's value",
		"  valid  true or false (fota_parse_http_date returns 0 for false)",
		"  unix   (valid) Unix seconds",
	}, cases, nil)
}

func genRFC3339(t *testing.T, write writeFunc) {
	var cases []*vectors.Case
	for _, r := range []struct {
		name string
		at   time.Time
	}{
		{"window-opens", time.Date(2026, 5, 2, 1, 0, 0, 0, time.UTC)},
		{"window-closes", time.Date(2026, 5, 2, 4, 0, 0, 0, time.UTC)},
		{"from-a-zone", time.Date(2026, 10, 25, 2, 30, 0, 0, time.FixedZone("CEST", 2*3600))},
		{"half-second", time.Date(2026, 5, 2, 1, 0, 0, 500_000_000, time.UTC)},
		{"nanoseconds", time.Date(2026, 5, 2, 1, 0, 59, 123456789, time.UTC)},
		{"end-of-year", time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"past-int32", time.Unix(1<<31, 0)},
	} {
		// As the server writes it: the instant in UTC, encoded by encoding/json.
		b, err := json.Marshal(r.at.UTC())
		if err != nil {
			t.Fatal(err)
		}
		text, _ := strconv.Unquote(string(b))
		cases = append(cases, vectors.New(r.name).Add("time", text).Add("valid", "true").AddInt("unix", r.at.Unix()))
	}
	for _, r := range []struct{ name, text string }{
		{"space-for-t", "2026-05-02 01:00:00Z"}, {"no-zone", "2026-05-02T01:00:00"}, {"hour-25", "2026-05-02T25:00:00Z"},
		{"not-a-time", "soon"},
	} {
		var tm time.Time
		if err := json.Unmarshal([]byte(strconv.Quote(r.text)), &tm); err == nil {
			t.Fatalf("%s: %q decodes", r.name, r.text)
		}
		cases = append(cases, vectors.New(r.name).Add("time", r.text).Add("valid", "false"))
	}
	write("rfc3339.vectors", []string{
		"install_after and install_until of a check answer (docs/PROTOCOL.md,",
		"POST /v1/device/check): RFC 3339 in UTC (Z), as the server writes them,",
		"with a fraction of a second only when the instant has one (trailing zeros",
		"dropped: .5, .123456789).",
		"  time   the JSON string's content",
		"  valid  true or false",
		"  unix   (valid) Unix seconds, the fraction dropped (rounded down)",
	}, cases, nil)
}
