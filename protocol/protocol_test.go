package protocol

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestLegacyChunkMACMatchesSpec(t *testing.T) {
	psk, _ := ParsePSK(strings.Repeat("0f", 32))
	data := []byte("chunk bytes")
	// Spelled out from docs/PROTOCOL.md: key is the hex text, message is data then decimal number.
	m := hmac.New(sha256.New, []byte(strings.Repeat("0f", 32)))
	m.Write([]byte("chunk bytes12"))
	want := m.Sum(nil)
	got := LegacyChunkMAC(psk, 12, data)
	if !bytes.Equal(got[:], want) {
		t.Fatalf("legacy MAC %x, want %x", got, want)
	}
}

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

func TestChunkMACsMatchSpec(t *testing.T) {
	psk, _ := ParsePSK(strings.Repeat("0f", 32))
	data := []byte("chunk bytes")
	// Spelled out from docs/PROTOCOL.md.
	v1 := hmac.New(sha256.New, psk[:])
	v1.Write([]byte("fota-chunk-v1\nsess-1\n\x00\x00\x01\x02chunk bytes"))
	key := hmac.New(sha256.New, psk[:])
	key.Write([]byte("fota-chunk-v2\nsess-1"))
	digest := sha256.Sum256(data)
	v2 := hmac.New(sha256.New, key.Sum(nil))
	v2.Write(append([]byte{0, 0, 1, 2}, digest[:]...))
	for scheme, want := range map[ChunkMACScheme][]byte{ChunkMACv1: v1.Sum(nil), ChunkMACv2: v2.Sum(nil)} {
		if got := ChunkMAC(psk, "sess-1", scheme, 258, data); !bytes.Equal(got[:], want) {
			t.Errorf("%s: HMAC %x, want %x", scheme, got, want)
		}
	}
	// A server with the digest gets the same HMAC, allocating nothing.
	c := NewChunkMACer(psk, "sess-1", ChunkMACv2)
	var out [32]byte
	if allocs := testing.AllocsPerRun(100, func() { c.MACDigest(258, &digest, &out) }); allocs != 0 {
		t.Errorf("MACDigest allocates %v times", allocs)
	}
	if !bytes.Equal(out[:], v2.Sum(nil)) {
		t.Errorf("MACDigest gives %x, want %x", out, v2.Sum(nil))
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

func TestSignRequestVerifies(t *testing.T) {
	psk, _ := NewPSK()
	body := []byte(`{"version":"1.0.3"}`)
	req, _ := http.NewRequest("POST", "http://h/v1/device/check?x=1", bytes.NewReader(body))
	now := time.Unix(1_800_000_000, 0)
	if err := SignRequest(req, "dev-1", psk, body, now); err != nil {
		t.Fatal(err)
	}
	if req.Header.Get(HeaderTimestamp) != "1800000000" || !ValidNonce(req.Header.Get(HeaderNonce)) {
		t.Fatalf("headers %v", req.Header)
	}
	canonical := CanonicalRequest("POST", "/v1/device/check?x=1", "dev-1", "1800000000", req.Header.Get(HeaderNonce), sha256.Sum256(body))
	mac := RequestMAC(psk, canonical)
	if hex.EncodeToString(mac[:]) != req.Header.Get(HeaderSignature) {
		t.Fatal("signature does not match the canonical request")
	}
	if !strings.HasPrefix(canonical, "fota-request-v1\nPOST\n/v1/device/check?x=1\ndev-1\n1800000000\n") {
		t.Fatalf("canonical form %q", canonical)
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

func TestFrames(t *testing.T) {
	var b []byte
	mac := [32]byte{1, 2, 3}
	b = AppendFrameHeader(b, 7, 5, &mac)
	b = append(b, "hello"...)
	b = AppendFrameHeader(b, 8, 2, &mac)
	b = append(b, "hi"...)
	for name, r := range map[string]io.Reader{"whole": bytes.NewReader(b), "a byte a read": iotest.OneByteReader(bytes.NewReader(b))} {
		fr := NewFrameReader(r, 1024, 0)
		f, err := fr.Next()
		if err != nil || f.Index != 7 || string(f.Data) != "hello" || f.MAC != mac {
			t.Fatalf("%s: frame 1: %+v %v", name, f, err)
		}
		f, err = fr.Next()
		if err != nil || f.Index != 8 || string(f.Data) != "hi" {
			t.Fatalf("%s: frame 2: %+v %v", name, f, err)
		}
		if _, err = fr.Next(); err != io.EOF {
			t.Fatalf("%s: end: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		stream  []byte
		maxData int
	}{"cut header": {b[:10], 1024}, "cut data": {b[:43], 1024}, "oversized": {b, 4}, "zero length": {AppendFrameHeader(nil, 1, 0, &mac), 1024}} {
		_, err := NewFrameReader(bytes.NewReader(tc.stream), tc.maxData, 0).Next()
		if !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v", name, err)
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
