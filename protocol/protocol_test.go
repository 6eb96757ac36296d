package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestChunkMACBindsEverything(t *testing.T) {
	a, _ := NewPSK()
	b, _ := NewPSK()
	for _, scheme := range ChunkMACSchemes {
		base := ChunkMAC(a, "s1", scheme, 3, []byte("data"))
		for name, other := range map[string][32]byte{
			"other device key": ChunkMAC(b, "s1", scheme, 3, []byte("data")),
			"other session":    ChunkMAC(a, "s2", scheme, 3, []byte("data")),
			"other index":      ChunkMAC(a, "s1", scheme, 4, []byte("data")),
			"other bytes":      ChunkMAC(a, "s1", scheme, 3, []byte("datA")),
		} {
			if other == base {
				t.Errorf("%s: %s gives the same HMAC", scheme, name)
			}
		}
		// Reusing one ChunkMACer gives the same answers as one-off calls.
		c := NewChunkMACer(a, "s1", scheme)
		var out [32]byte
		for i := 0; i < 3; i++ {
			c.MAC(3, []byte("data"), &out)
			if out != base {
				t.Fatalf("%s: ChunkMACer state leaks between chunks", scheme)
			}
		}
	}
	if ChunkMAC(a, "s1", ChunkMACv1, 3, []byte("data")) == ChunkMAC(a, "s1", ChunkMACv2, 3, []byte("data")) {
		t.Error("v1 and v2 give the same HMAC")
	}
}

// A server with the digests computes v2 HMACs allocating nothing
// (testdata/vectors/chunk-mac.vectors checks the values).
func TestMACDigestAllocatesNothing(t *testing.T) {
	psk, _ := NewPSK()
	c := NewChunkMACer(psk, "sess-1", ChunkMACv2)
	digest := sha256.Sum256([]byte("chunk bytes"))
	var out [32]byte
	if allocs := testing.AllocsPerRun(100, func() { c.MACDigest(258, &digest, &out) }); allocs != 0 {
		t.Errorf("MACDigest allocates %v times", allocs)
	}
}

func TestChunkMACSchemeNegotiation(t *testing.T) {
	for in, want := range map[string]ChunkMACScheme{"": ChunkMACv1, "v1": ChunkMACv1, "v2": ChunkMACv2} {
		if got, err := ParseChunkMACScheme(in); err != nil || got != want {
			t.Errorf("ParseChunkMACScheme(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"v3", "V2", "2", " v2"} {
		if _, err := ParseChunkMACScheme(bad); err == nil || !strings.Contains(err.Error(), "want v1 or v2") {
			t.Errorf("ParseChunkMACScheme(%q): error %v, want one naming the schemes", bad, err)
		}
	}
	if got := PreferredChunkMAC(nil); got != ChunkMACv1 {
		t.Errorf("a server offering nothing (from before v2) gets %q, want v1", got)
	}
	if got := PreferredChunkMAC([]ChunkMACScheme{"v1", "v9", "v2"}); got != ChunkMACv2 {
		t.Errorf("a server offering v2 gets %q", got)
	}
	if got := PreferredChunkMAC([]ChunkMACScheme{"v9"}); got != ChunkMACv1 {
		t.Errorf("a server offering only unknown schemes gets %q, want v1", got)
	}
}

// SignRequest sets the four headers, with a valid nonce that differs every
// time (testdata/vectors/request-signing.vectors checks the signatures).
func TestSignRequestHeaders(t *testing.T) {
	psk, _ := NewPSK()
	body := []byte(`{"version":"1.0.3"}`)
	nonces := map[string]bool{}
	for range 3 {
		req, _ := http.NewRequest("POST", "http://h/v1/device/check?x=1", bytes.NewReader(body))
		if err := SignRequest(req, "dev-1", psk, body, time.Unix(1_800_000_000, 0)); err != nil {
			t.Fatal(err)
		}
		nonce := req.Header.Get(HeaderNonce)
		if req.Header.Get(HeaderDevice) != "dev-1" || req.Header.Get(HeaderTimestamp) != "1800000000" || !ValidNonce(nonce) || nonces[nonce] {
			t.Fatalf("headers %v", req.Header)
		}
		nonces[nonce] = true
		mac := RequestMAC(psk, CanonicalRequest("POST", "/v1/device/check?x=1", "dev-1", "1800000000", nonce, sha256.Sum256(body)))
		if req.Header.Get(HeaderSignature) != hex.EncodeToString(mac[:]) {
			t.Fatal("signature does not match the canonical request")
		}
	}
}

func TestPSK(t *testing.T) {
	k, _ := NewPSK()
	back, err := ParsePSK(k.Hex())
	if err != nil || back != k {
		t.Fatal("PSK hex round trip failed")
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := ParsePSK(bad); err == nil {
			t.Errorf("ParsePSK(%q) accepted", bad)
		}
	}
	if s := fmt.Sprintf("%v %s", k, k); strings.Contains(s, k.Hex()[:8]) {
		t.Fatal("PSK printed")
	}
}

func TestValidIDs(t *testing.T) {
	for _, id := range []string{"ESP32_EcoWatt_Smart", "dev-1", "a.b"} {
		if !ValidDeviceID(id) {
			t.Errorf("%q refused", id)
		}
	}
	for _, id := range []string{"", ".", "..", "../etc", "a/b", "x'; DROP TABLE devices;--", strings.Repeat("a", 65), "sp ace"} {
		if ValidDeviceID(id) {
			t.Errorf("%q accepted", id)
		}
	}
}

// A long stream through a small buffer: frames straddle every refill.
func TestFrameReaderRefills(t *testing.T) {
	var b []byte
	var mac [32]byte
	for i := range 300 {
		data := bytes.Repeat([]byte{byte(i)}, 1000+i%24)
		mac[0] = byte(i)
		b = AppendFrameHeader(b, i, len(data), &mac)
		b = append(b, data...)
	}
	fr := NewFrameReader(bytes.NewReader(b), 1024, 4096)
	for i := range 300 {
		f, err := fr.Next()
		if err != nil || f.Index != i || f.MAC[0] != byte(i) || len(f.Data) != 1000+i%24 || !bytes.Equal(f.Data, bytes.Repeat([]byte{byte(i)}, len(f.Data))) {
			t.Fatalf("frame %d: index %d, %d bytes, %v", i, f.Index, len(f.Data), err)
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}
