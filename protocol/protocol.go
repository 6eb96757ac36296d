// Package protocol holds the cryptographic rules of the two device APIs,
// shared by the server, the Go client and the agent, and mirrored by
// docs/PROTOCOL.md for other implementations.
//
// Threat model of the device side:
//   - Each device has its own 32-byte pre-shared key (PSK), known to the
//     device and the server only. Its text form is 64 lowercase hex digits.
//   - Native API: every device request carries an HMAC over method, path,
//     timestamp, nonce and body hash, so a request cannot be forged, altered
//     or replayed (the server refuses stale timestamps and seen nonces).
//     Every chunk carries an HMAC over the session id, the chunk index and
//     the bytes (v2: their SHA-256), so a chunk recorded in one session, for
//     one device or at another index is useless anywhere else.
//   - EcoWatt-compatible API (legacy): chunks carry HMAC-SHA256 keyed with
//     the PSK's hex text over the bytes and the decimal chunk number, as the
//     original ESP32 client checks. It binds neither the device nor the
//     session, and requests are not authenticated: see docs/PROTOCOL.md.
//   - Authenticity of the firmware itself never rests on these HMACs: the
//     release signature does that, checked by the device.
package protocol

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
)

// PSKSize is the size of a device pre-shared key.
const PSKSize = 32

// PSK is a device pre-shared key.
type PSK [PSKSize]byte

// NewPSK returns a random key.
func NewPSK() (PSK, error) {
	var k PSK
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate device key: %w", err)
	}
	return k, nil
}

// ParsePSK reads the 64-hex-digit text form.
func ParsePSK(s string) (PSK, error) {
	var k PSK
	if len(s) != 2*PSKSize {
		return k, fmt.Errorf("device key must be %d hex digits, got %d characters", 2*PSKSize, len(s))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, errors.New("device key is not hex")
	}
	return k, nil
}

// Hex returns the text form: what HMAC_PSK holds in a device's keys.h.
func (k PSK) Hex() string { return hex.EncodeToString(k[:]) }

// String keeps the key out of formatted output.
func (PSK) String() string { return "REDACTED" }

// LogValue keeps the key out of structured logs.
func (PSK) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// LegacyChunkMAC is the EcoWatt-compatible chunk HMAC: HMAC-SHA256 keyed
// with the ASCII hex text of the PSK (the original client keys its HMAC
// with strlen(HMAC_PSK) bytes of that string) over the chunk bytes followed
// by the chunk number in decimal ASCII.
func LegacyChunkMAC(psk PSK, chunkNumber int, data []byte) [32]byte {
	var key [2 * PSKSize]byte
	hex.Encode(key[:], psk[:])
	m := hmac.New(sha256.New, key[:])
	m.Write(data)
	m.Write(strconv.AppendInt(nil, int64(chunkNumber), 10))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// ChunkMACScheme names how native chunk HMACs are computed. A device asks
// for one with the "mac" query parameter of the chunks and MACs URLs; the
// check answer lists the schemes the server offers.
type ChunkMACScheme string

const (
	// ChunkMACv1 is HMAC-SHA256(PSK, "fota-chunk-v1\n" ‖ session id ‖ "\n" ‖
	// index ‖ chunk bytes): both sides hash every chunk under the MAC.
	ChunkMACv1 ChunkMACScheme = "v1"
	// ChunkMACv2 is HMAC-SHA256(session key, index ‖ SHA-256(chunk bytes)),
	// the session key being HMAC-SHA256(PSK, "fota-chunk-v2\n" ‖ session id).
	// The device's cost is about v1's (one SHA-256 of the chunk, then a
	// one-block HMAC), but the server hashes each release's chunks once and
	// then MACs 36 bytes per chunk per device instead of the whole chunk.
	ChunkMACv2 ChunkMACScheme = "v2"
)

// ChunkMACSchemes are the schemes this version speaks, preferred last.
var ChunkMACSchemes = []ChunkMACScheme{ChunkMACv1, ChunkMACv2}

// ParseChunkMACScheme reads the "mac" query parameter; absent means v1,
// which is what devices from before v2 get without asking.
func ParseChunkMACScheme(s string) (ChunkMACScheme, error) {
	switch ChunkMACScheme(s) {
	case "", ChunkMACv1:
		return ChunkMACv1, nil
	case ChunkMACv2:
		return ChunkMACv2, nil
	}
	return "", fmt.Errorf("chunk MAC scheme %q: want v1 or v2", s)
}

// PreferredChunkMAC picks the best scheme of those a server offers: v1 when
// it offers none, as servers from before v2 do not say.
func PreferredChunkMAC(offered []ChunkMACScheme) ChunkMACScheme {
	for _, s := range offered {
		if s == ChunkMACv2 {
			return ChunkMACv2
		}
	}
	return ChunkMACv1
}

// ChunkMACer computes native chunk HMACs for one session; it reuses its
// HMAC state, so a server serving many chunks allocates nothing per chunk.
// Not safe for concurrent use.
type ChunkMACer struct {
	mac hash.Hash
	v2  bool
	// head is, in v1, "fota-chunk-v1\n" ‖ session id ‖ "\n" ‖ room for the
	// index; in v2 room for the index and the digest: one Write per chunk,
	// with nothing converted or allocated.
	head []byte
}

// Domains separate chunk HMACs from request HMACs made with the same key.
const (
	chunkDomain   = "fota-chunk-v1\n"
	chunkDomainV2 = "fota-chunk-v2\n"
)

// NewChunkMACer returns a ChunkMACer for the session. The scheme must be
// one ParseChunkMACScheme returns.
func NewChunkMACer(psk PSK, sessionID string, scheme ChunkMACScheme) *ChunkMACer {
	switch scheme {
	case ChunkMACv1:
		head := make([]byte, 0, len(chunkDomain)+len(sessionID)+1+4)
		head = append(append(append(head, chunkDomain...), sessionID...), '\n')
		return &ChunkMACer{mac: hmac.New(sha256.New, psk[:]), head: head}
	case ChunkMACv2:
		k := hmac.New(sha256.New, psk[:])
		k.Write([]byte(chunkDomainV2))
		k.Write([]byte(sessionID))
		return &ChunkMACer{mac: hmac.New(sha256.New, k.Sum(nil)), v2: true, head: make([]byte, 0, 4+sha256.Size)}
	}
	panic("protocol: unknown chunk MAC scheme " + strconv.Quote(string(scheme)))
}

// MAC returns the HMAC of chunk index holding data into out.
func (c *ChunkMACer) MAC(index int, data []byte, out *[32]byte) {
	if c.v2 {
		digest := sha256.Sum256(data)
		c.MACDigest(index, &digest, out)
		return
	}
	c.mac.Reset()
	c.mac.Write(binary.BigEndian.AppendUint32(c.head, uint32(index)))
	c.mac.Write(data)
	c.mac.Sum(out[:0])
}

// MACDigest returns the v2 HMAC of chunk index from the SHA-256 of its
// bytes, for a server that has the digests already. It panics on a v1
// ChunkMACer, whose HMAC needs the bytes.
func (c *ChunkMACer) MACDigest(index int, digest *[32]byte, out *[32]byte) {
	if !c.v2 {
		panic("protocol: MACDigest on a v1 ChunkMACer")
	}
	c.mac.Reset()
	c.mac.Write(append(binary.BigEndian.AppendUint32(c.head, uint32(index)), digest[:]...))
	c.mac.Sum(out[:0])
}

// ChunkMAC is a one-off ChunkMACer.MAC.
func ChunkMAC(psk PSK, sessionID string, scheme ChunkMACScheme, index int, data []byte) [32]byte {
	var out [32]byte
	NewChunkMACer(psk, sessionID, scheme).MAC(index, data, &out)
	return out
}
