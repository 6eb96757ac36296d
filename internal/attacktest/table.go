package attacktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// The scenario every attack starts from: a device DeviceID of hardware
// Hardware runs Running, and the server offers it Release, a healthy
// sample image of ReleaseSize bytes (PublishRelease) rolled out to every
// device.
const (
	DeviceID    = "dev1"
	Hardware    = "esp32"
	Running     = "1.0.3"
	Release     = "1.0.4"
	ReleaseSize = 20 << 10
)

// PublishRelease publishes Release and rolls it out to every device.
func PublishRelease(srv *testserver.Server) {
	srv.TB.Helper()
	srv.PublishSample(Release, firmware.Healthy, ReleaseSize)
}

// ReleaseImage returns Release's plaintext: whatever an attack lets reach
// the device's update slot must be a prefix of it (unless OtherImage).
func ReleaseImage(srv *testserver.Server) []byte {
	srv.TB.Helper()
	return srv.Sample(Release, firmware.Healthy, ReleaseSize, 0)
}

// Kind is what a device detects: the class of error it must fail with.
type Kind string

const (
	KindSignature    Kind = "signature"     // the manifest signature does not verify
	KindUntrustedKey Kind = "untrusted-key" // signed by a key the device does not trust
	KindManifest     Kind = "manifest"      // the check answer disagrees with the signed manifest
	KindDowngrade    Kind = "downgrade"     // validly signed, not newer than the running image
	KindCounter      Kind = "counter"       // validly signed, security counter below the device's
	KindHardware     Kind = "hardware"      // validly signed, for other hardware
	KindChunkMAC     Kind = "chunk-mac"     // a chunk fails its session-bound HMAC (every retry)
	KindFrame        Kind = "frame"         // a chunks answer is malformed, cut short or empty
	KindHash         Kind = "hash"          // the image's SHA-256 is not the signed one
	KindTimeout      Kind = "timeout"       // the update does not finish in the time allowed
)

// Device is what an attack assumes of the device under test, beyond the
// scenario. Each test sets its own device up accordingly.
type Device struct {
	// Counter is the device's stored security counter before the attack
	// (its running image's secure_version).
	Counter uint32
	// UpdateTimeout, when set, bounds the whole update: the attack shows
	// only to a device that gives up after it (the Go agent's
	// Config.UpdateTimeout).
	UpdateTimeout time.Duration
	// ChunksPerRequest, when set, is how many chunks the device should ask
	// for at once, so the attack has enough requests to work on.
	ChunksPerRequest int
}

// Attack is one row of the table.
type Attack struct {
	Name string // a sentence, for subtest names
	ID   string // a short machine name, stable: "tampered-version"
	Kind Kind
	// Setup prepares the attack once the scenario is in place (Release
	// published, the device registered as DeviceID running Running) and
	// the device points at m.URL: it sets m's fields and may publish
	// releases or register other devices.
	Setup func(tb testing.TB, srv *testserver.Server, m *MITM)
	// AgentError is what the Go agent's error says.
	AgentError string
	Device     Device
	// OtherImage: the server itself serves another image, with valid
	// HMACs, so bytes that reach the slot need not be Release's.
	OtherImage bool
}

// untrustedKey is a release key no device trusts, made once.
var untrustedKey = sync.OnceValue(func() *keys.SigningKey {
	k, err := keys.Generate(keys.AlgRSA, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

// Attacks returns the table: each attack must fail the update with its
// Kind's error, leave the device's boot state and security counter as they
// were, let no byte of a bad chunk reach the slot, and leave the device
// booting its running image.
func Attacks() []Attack {
	tampered := func(id, what string, check func([]byte) []byte) Attack {
		return Attack{Name: what + " changed after signing", ID: id, Kind: KindSignature,
			Setup:      func(_ testing.TB, _ *testserver.Server, m *MITM) { m.Check = check },
			AgentError: "signature does not match key"}
	}
	return []Attack{
		{Name: "unsigned manifest", ID: "unsigned-manifest", Kind: KindSignature,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				m.Check = EditCheck(func(c map[string]any) { c["signature"] = "" })
			}, AgentError: "signature does not match key"},
		{Name: "signature by an untrusted key", ID: "untrusted-key", Kind: KindUntrustedKey,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				other := untrustedKey()
				m.Check = EditCheck(func(c map[string]any) {
					raw, _ := base64.StdEncoding.DecodeString(c["manifest"].(string))
					raw = regexp.MustCompile(`"key_id": "[0-9a-f]+"`).ReplaceAll(raw, []byte(`"key_id": "`+other.Public().ID()+`"`))
					sig, _ := other.Sign(raw)
					c["manifest"], c["signature"] = base64.StdEncoding.EncodeToString(raw), base64.StdEncoding.EncodeToString(sig)
				})
			}, AgentError: "signed by an untrusted key"},
		tampered("tampered-version", "version", EditManifest(`"version": "1.0.4"`, `"version": "9.9.9"`)),
		tampered("tampered-hardware", "hardware", EditManifest(`"hardware": "esp32"`, `"hardware": "esp32x"`)),
		tampered("tampered-counter", "security counter", EditManifest(`"security_counter": 0`, `"security_counter": 7`)),
		tampered("tampered-size", "size", EditManifest(`"plaintext_size": (\d+)`, `"plaintext_size": 1$1`)),
		tampered("tampered-plaintext-hash", "plaintext hash", FlipManifestField("plaintext_sha256")),
		tampered("tampered-ciphertext-hash", "ciphertext hash", FlipManifestField("ciphertext_sha256")),
		tampered("tampered-iv", "IV", FlipManifestField("iv")),
		{Name: "chunk count beyond the signed size", ID: "chunk-count-beyond-signed-size", Kind: KindManifest,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				m.Check = EditCheck(func(c map[string]any) { c["chunks"] = c["chunks"].(float64) + 100 })
			}, AgentError: "disagrees with the signed manifest"},
		{Name: "downgrade to an older signed release", ID: "downgrade", Kind: KindDowngrade,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				m.Check = olderOffer(tb, srv, "attacker-old")
			}, AgentError: "not newer than the running 1.0.3 (downgrade)"},
		{Name: "older signed release put into the real session", ID: "older-offer-in-session", Kind: KindDowngrade,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				// The device's own session, with another release's signed
				// manifest: its refusal must not exclude the session's
				// release (the server holds the report's version to it).
				older := olderOffer(tb, srv, "attacker-older")
				m.Check = func(real []byte) []byte {
					var mine, theirs map[string]any
					json.Unmarshal(real, &mine)
					json.Unmarshal(older(real), &theirs)
					if mine["update"] != true {
						return real
					}
					for _, k := range []string{"version", "manifest", "signature", "chunk_size", "chunks", "ciphertext_size"} {
						mine[k] = theirs[k]
					}
					b, _ := json.Marshal(mine)
					return b
				}
			}, AgentError: "not newer than the running 1.0.3 (downgrade)"},
		{Name: "older signed release relabelled as 9.9.9", ID: "relabelled-old-release", Kind: KindSignature,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				// The attack the EcoWatt API needs the app descriptor against;
				// here the manifest carries the version under the signature.
				offer := olderOffer(tb, srv, "attacker-relabel")
				relabel := EditManifest(`"version": "1.0.2"`, `"version": "9.9.9"`)
				version := EditCheck(func(c map[string]any) { c["version"] = "9.9.9" })
				m.Check = func(b []byte) []byte { return version(relabel(offer(b))) }
			}, AgentError: "signature does not match key"},
		{Name: "lower security counter", ID: "lower-counter", Kind: KindCounter,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				srv.Publish(srv.Bundle("1.0.5", srv.Sample("1.0.5", firmware.Healthy, ReleaseSize, 1), 0, 1))
				m.Check = AsDevice(tb, srv, "attacker-counter", Hardware, Running, 0)
			}, AgentError: "security counter 1 is below the device's 3", Device: Device{Counter: 3}},
		{Name: "wrong hardware", ID: "wrong-hardware", Kind: KindHardware,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				img := srv.Sample("1.0.6", firmware.Healthy, ReleaseSize, 0)
				var out bytes.Buffer
				if _, err := bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32s3", Version: "1.0.6",
					Signer: srv.Signer, FirmwareKey: srv.FWKey, TempDir: tb.TempDir()}); err != nil {
					tb.Fatal(err)
				}
				srv.Publish(out.Bytes())
				m.Check = AsDevice(tb, srv, "attacker-s3", "esp32s3", Running, 0)
			}, AgentError: "built for esp32s3, this device is esp32"},
		{Name: "chunk with a bad HMAC", ID: "chunk-bad-mac", Kind: KindChunkMAC,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				m.Chunks = func(_ *http.Request, b []byte) []byte {
					fs := SplitFrames(b)
					fs[len(fs)-1].Data[3] ^= 0x55
					return JoinFrames(fs)
				}
			}, AgentError: "chunk HMAC mismatch"},
		{Name: "valid chunk replayed from another session", ID: "chunk-replayed-from-session", Kind: KindChunkMAC,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				// A recorded download of the same release by the same
				// device, whose session was then ended.
				old := RecordSession(tb, srv, DeviceID)
				m.Chunks = func(req *http.Request, b []byte) []byte {
					from, _ := strconv.Atoi(req.URL.Query().Get("from"))
					fs := SplitFrames(b)
					for i := range fs {
						fs[i] = old[from+i]
					}
					return JoinFrames(fs)
				}
			}, AgentError: "chunk HMAC mismatch"},
		{Name: "a chunk of another device", ID: "chunk-of-other-device", Kind: KindChunkMAC,
			Setup: func(tb testing.TB, srv *testserver.Server, m *MITM) {
				theirs := RecordSession(tb, srv, "neighbour")
				m.Chunks = func(req *http.Request, b []byte) []byte {
					from, _ := strconv.Atoi(req.URL.Query().Get("from"))
					fs := SplitFrames(b)
					fs[0] = theirs[from]
					return JoinFrames(fs)
				}
			}, AgentError: "chunk HMAC mismatch"},
		{Name: "chunks swapped", ID: "chunks-swapped", Kind: KindChunkMAC,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				m.Chunks = func(_ *http.Request, b []byte) []byte {
					fs := SplitFrames(b)
					if len(fs) > 1 {
						fs[0].Data, fs[1].Data = fs[1].Data, fs[0].Data
						fs[0].MAC, fs[1].MAC = fs[1].MAC, fs[0].MAC
					}
					return JoinFrames(fs)
				}
			}, AgentError: "chunk HMAC mismatch"},
		{Name: "endless data", ID: "endless-data", Kind: KindFrame,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				// The first frame claims a gigabyte and the data never ends.
				m.Chunks = func(_ *http.Request, b []byte) []byte {
					fs := SplitFrames(b)
					return append(protocol.AppendFrameHeader(nil, fs[0].Index, 1<<30, &[32]byte{}), make([]byte, 256<<10)...)
				}
			}, AgentError: "malformed chunk frame"},
		{Name: "truncated image", ID: "truncated-image", Kind: KindFrame,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				// Chunks from 19 on never come: answers asking for them are empty.
				m.Chunks = func(_ *http.Request, b []byte) []byte {
					var keep []protocol.Frame
					for _, f := range SplitFrames(b) {
						if f.Index < 19 {
							keep = append(keep, f)
						}
					}
					return JoinFrames(keep)
				}
			}, AgentError: "empty answer"},
		{Name: "valid chunks whose plaintext hash fails", ID: "plaintext-hash-mismatch", Kind: KindHash,
			Setup: func(tb testing.TB, srv *testserver.Server, _ *MITM) {
				// A newer, validly signed release whose manifest names
				// another plaintext hash; rolled out to every device, it
				// supersedes Release's rollout and is offered instead.
				PublishSigned(tb, srv, "1.0.7", func(m *bundle.Manifest) { m.PlaintextSHA256 = strings.Repeat("0", 64) })
			}, AgentError: "firmware sha256 mismatch", OtherImage: true},
		{Name: "stalled server (slow retrieval)", ID: "stalled-server", Kind: KindTimeout,
			Setup: func(_ testing.TB, _ *testserver.Server, m *MITM) {
				m.Delay = 100 * time.Millisecond
			}, AgentError: "did not finish within 250ms", Device: Device{UpdateTimeout: 250 * time.Millisecond, ChunksPerRequest: 2}},
	}
}

// olderOffer publishes 1.0.2, older than the device's Running, pins the
// attacker's device id (running 1.0.1) to it, and returns the check
// answers the server gives that device: validly signed offers of an older
// release.
func olderOffer(tb testing.TB, srv *testserver.Server, id string) func([]byte) []byte {
	tb.Helper()
	srv.PublishSample("1.0.2", firmware.Healthy, ReleaseSize)
	offer := AsDevice(tb, srv, id, Hardware, "1.0.1", 0)
	if err := srv.Admin.Pin(context.Background(), id, "1.0.2"); err != nil {
		tb.Fatal(err)
	}
	return offer
}

// StillOffered fails the test unless the server still offers device id
// (running Running, with the device's counter) an update: no attack may
// make the server hold a release back from the device for good.
func StillOffered(tb testing.TB, srv *testserver.Server, id string, psk protocol.PSK, counter uint32) {
	tb.Helper()
	d, err := client.NewDevice(srv.URL, id, psk)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := d.Check(context.Background(), protocol.CheckRequest{Version: Running, Hardware: Hardware, SecurityCounter: counter})
	if err != nil || !r.Update {
		tb.Fatalf("after the attack the server no longer offers the device an update: %+v %v (events %v)", r, err, srv.Events(id))
	}
}
