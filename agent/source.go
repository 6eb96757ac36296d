package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// offer is an update the server proposes, already verified: for the native
// API its signed manifest, for the EcoWatt API the legacy signature over the
// firmware digest (all that API signs).
type offer struct {
	api             string
	sessionID       string                  // native only
	chunkMAC        protocol.ChunkMACScheme // native only
	version         string
	securityCounter uint32
	plaintextSize   int64
	plaintextSHA256 [32]byte
	ciphertextSize  int64
	ciphertextSHA   *[32]byte // native only: the legacy API does not send it
	iv              []byte
	chunkSize       int
	chunks          int
	// installAfter and installUntil bound when it may be installed (native
	// only; zero: no bound on that side).
	installAfter, installUntil time.Time
	// delta is set when the session serves a patch onto the running image
	// (native only): the ciphertext is then the encrypted patch, and the
	// plaintext fields above are the image it makes.
	delta *deltaOffer
	// fullSize is the full image's ciphertext size, as the server says
	// when it offers a delta (display only).
	fullSize int64
}

// deltaOffer is what a signed delta manifest says of its patch.
type deltaOffer struct {
	baseVersion string
	baseSize    int64
	baseSHA256  [32]byte
	compression string
	patchSize   int64
}

// fingerprint identifies the release and artifact an offer is for, to
// match a saved download with a new check: a patch's progress never
// resumes a full download, nor the other way round.
func (o *offer) fingerprint() string {
	f := o.api + "/" + o.version + "/" + hex.EncodeToString(o.plaintextSHA256[:])
	if o.delta != nil {
		f += "/delta/" + hex.EncodeToString(o.delta.baseSHA256[:])
	}
	return f
}

// report is a result the server must hear, kept in the outbox until it did.
type report struct {
	API       string `json:"api"`
	SessionID string `json:"session_id,omitempty"`
	Version   string `json:"version"`
	Status    string `json:"status"` // downloaded, verified, applied, confirmed, rolled-back, failed
	Reason    string `json:"reason,omitempty"`
	// Artifact "delta": a failure of the delta, not of the release.
	Artifact string `json:"artifact,omitempty"`
}

// source is one device API as the agent uses it.
type source interface {
	// check asks for an update; nil offer with a message when there is none.
	check(ctx context.Context, running Image, counter uint32) (*offer, string, error)
	// fetch calls fn for chunks from..from+count-1 in order, each HMAC-checked
	// before fn sees it; a chunk failing its HMAC ends fetch with ErrChunkMAC.
	fetch(ctx context.Context, o *offer, from, count int, fn func(index int, data []byte) error) error
	send(ctx context.Context, r report) error
}

// ErrChunkMAC means a chunk failed its HMAC: corrupted on the way, or forged.
var ErrChunkMAC = client.ErrChunkMAC

// nativeSource speaks the native API through client.Device.
type nativeSource struct {
	dev       *client.Device
	hardware  string
	trusted   *keys.PublicKey
	inventory func() *protocol.Inventory
	// delta lists the patch compressions the device applies; nil: full
	// images only.
	delta []string
}

func (n *nativeSource) check(ctx context.Context, running Image, counter uint32) (*offer, string, error) {
	req := protocol.CheckRequest{Version: running.Version, Hardware: n.hardware, SecurityCounter: counter, Inventory: n.inventory()}
	if n.delta != nil && running.Size > 0 && running.SHA256 != ([32]byte{}) {
		req.ImageSHA256, req.Delta = hex.EncodeToString(running.SHA256[:]), n.delta
	}
	resp, err := n.dev.Check(ctx, req)
	if err != nil {
		return nil, "", err
	}
	if !resp.Update {
		return nil, resp.Message, nil
	}
	manifest, err1 := base64.StdEncoding.DecodeString(resp.Manifest)
	sig, err2 := base64.StdEncoding.DecodeString(resp.Signature)
	if err1 != nil || err2 != nil {
		return nil, "", fatalf("check answer carries a malformed manifest or signature")
	}
	// Verify before trusting a byte: the signature over the exact manifest bytes first.
	env := bundle.Envelope{ManifestBytes: manifest, Signature: sig}
	m, err := env.Verify(n.trusted)
	if err != nil {
		return nil, "", fatalf("refusing update %s: %v", resp.Version, err)
	}
	if m.Version != resp.Version || m.ChunkSize != resp.ChunkSize || m.Chunks() != resp.Chunks || m.CiphertextSize != resp.CiphertextSize {
		return nil, "", fatalf("refusing update: the check answer (%s, %d chunks of %d) disagrees with the signed manifest (%s, %d chunks of %d)",
			resp.Version, resp.Chunks, resp.ChunkSize, m.Version, m.Chunks(), m.ChunkSize)
	}
	if m.Hardware != n.hardware {
		return nil, "", fatalf("refusing update %s: built for %s, this device is %s", m.Version, m.Hardware, n.hardware)
	}
	ct := m.CiphertextDigest()
	o := &offer{api: APINative, sessionID: resp.SessionID, chunkMAC: protocol.PreferredChunkMAC(resp.ChunkMACs), version: m.Version, securityCounter: m.SecurityCounter,
		plaintextSize: m.PlaintextSize, plaintextSHA256: m.PlaintextDigest(), ciphertextSize: m.CiphertextSize,
		ciphertextSHA: &ct, iv: m.IVBytes(), chunkSize: m.ChunkSize, chunks: m.Chunks(),
		installAfter: resp.InstallAfter, installUntil: resp.InstallUntil}
	// What the offer is, is the signed manifest's word: a full manifest is
	// installed as the image whatever the answer's artifact says (if the
	// session serves something else, the download finds out), and a delta
	// manifest only where the answer offers a delta.
	switch {
	case m.Kind == bundle.KindFull:
		return o, "", nil
	case resp.Artifact != "delta":
		// A delta failure: the server counts nothing against the release
		// and offers the full image next.
		return o, "", deltaFailed("refusing update %s: the check answer offers artifact %q, the signed manifest is of kind %q",
			m.Version, truncate(resp.Artifact, 20), m.Kind)
	case n.delta == nil:
		return nil, "", fatalf("refusing update %s: offered as a delta patch, which this device did not ask for", m.Version)
	}
	o.fullSize = resp.FullSize
	o.delta = &deltaOffer{baseVersion: m.BaseVersion, baseSize: m.BaseSize, baseSHA256: m.BaseDigest(), compression: m.Compression,
		patchSize: m.PatchSize}
	if o.delta.baseSHA256 != running.SHA256 || o.delta.baseSize != running.Size {
		// Not a refusal of the release: the server's fallback gives the full
		// image next time, which this device takes.
		return o, "", deltaFailed("the patch is for %s (%d bytes, sha256 %.12s…), this device runs %s (%d bytes, sha256 %.12s…)",
			m.BaseVersion, m.BaseSize, m.BaseSHA256, running.Version, running.Size, hex.EncodeToString(running.SHA256[:]))
	}
	return o, "", nil
}

func (n *nativeSource) fetch(ctx context.Context, o *offer, from, count int, fn func(int, []byte) error) error {
	return n.dev.Chunks(ctx, o.sessionID, o.chunkMAC, from, count, o.chunkSize, func(f protocol.Frame) error { return fn(f.Index, f.Data) })
}

func (n *nativeSource) send(ctx context.Context, r report) error {
	return n.dev.SendReport(ctx, r.SessionID, protocol.Report{Status: r.Status, Reason: r.Reason, Version: r.Version, Artifact: r.Artifact})
}

// legacySource speaks the EcoWatt-compatible API exactly as the original
// ESP32 OTAManager does: JSON requests, base64 chunks, an HMAC keyed with
// the PSK's hex text over the chunk and its decimal number. It is written
// from docs/PROTOCOL.md, independently of the server.
type legacySource struct {
	base     string
	deviceID string
	psk      protocol.PSK
	trusted  *keys.PublicKey
	http     *http.Client
}

func (l *legacySource) post(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", l.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return client.ErrorFromAnswer(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("POST %s: bad answer: %w", path, err)
	}
	return nil
}

func (l *legacySource) check(ctx context.Context, running Image, _ uint32) (*offer, string, error) {
	var resp struct {
		UpdateAvailable bool   `json:"update_available"`
		Version         string `json:"version"`
		OriginalSize    int64  `json:"original_size"`
		EncryptedSize   int64  `json:"encrypted_size"`
		TotalChunks     int    `json:"total_chunks"`
		ChunkSize       int    `json:"chunk_size"`
		SHA256Hash      string `json:"sha256_hash"`
		Signature       string `json:"signature"`
		IV              string `json:"iv"`
		Message         string `json:"message"`
	}
	if err := l.post(ctx, "/ota/check", map[string]string{"device_id": l.deviceID, "current_version": running.Version}, &resp); err != nil {
		return nil, "", err
	}
	if !resp.UpdateAvailable {
		return nil, resp.Message, nil
	}
	o := &offer{api: APIEcoWatt, version: resp.Version, plaintextSize: resp.OriginalSize, ciphertextSize: resp.EncryptedSize,
		chunkSize: resp.ChunkSize, chunks: resp.TotalChunks}
	digest, err := hex.DecodeString(resp.SHA256Hash)
	if err != nil || len(digest) != 32 {
		return nil, "", fatalf("refusing update %s: sha256_hash is not a SHA-256", resp.Version)
	}
	copy(o.plaintextSHA256[:], digest)
	sig, err := base64.StdEncoding.DecodeString(resp.Signature)
	if err != nil {
		return nil, "", fatalf("refusing update %s: signature is not base64", resp.Version)
	}
	// All the legacy API signs is the firmware digest; check it before downloading.
	if err := l.trusted.VerifyDigest(o.plaintextSHA256, sig); err != nil {
		return nil, "", fatalf("refusing update %s: %v", resp.Version, err)
	}
	if o.iv, err = base64.StdEncoding.DecodeString(resp.IV); err != nil || len(o.iv) != 16 {
		return nil, "", fatalf("refusing update %s: iv is not 16 bytes of base64", resp.Version)
	}
	if o.chunkSize <= 0 || o.chunkSize%16 != 0 || o.plaintextSize <= 0 || o.ciphertextSize != (o.plaintextSize/16+1)*16 ||
		int64(o.chunks) != (o.ciphertextSize+int64(o.chunkSize)-1)/int64(o.chunkSize) {
		return nil, "", fatalf("refusing update %s: inconsistent sizes (%d bytes, %d encrypted, %d chunks of %d)",
			resp.Version, o.plaintextSize, o.ciphertextSize, o.chunks, o.chunkSize)
	}
	return o, "", nil
}

func (l *legacySource) fetch(ctx context.Context, o *offer, from, count int, fn func(int, []byte) error) error {
	for i := from; i < from+count; i++ {
		var resp struct {
			Chunk struct {
				ChunkNumber int    `json:"chunk_number"`
				Data        string `json:"data"`
				Size        int    `json:"size"`
				HMAC        string `json:"hmac"`
			} `json:"chunk"`
		}
		if err := l.post(ctx, "/ota/chunk", map[string]any{"device_id": l.deviceID, "version": o.version, "chunk_number": i}, &resp); err != nil {
			return err
		}
		data, err := base64.StdEncoding.DecodeString(resp.Chunk.Data)
		if err != nil || resp.Chunk.ChunkNumber != i || len(data) != resp.Chunk.Size || len(data) > o.chunkSize {
			return fmt.Errorf("chunk %d: %w", i, ErrChunkMAC)
		}
		want := protocol.LegacyChunkMAC(l.psk, i, data)
		got, err := hex.DecodeString(resp.Chunk.HMAC)
		if err != nil || !hmac.Equal(got, want[:]) {
			return fmt.Errorf("chunk %d: %w", i, ErrChunkMAC)
		}
		if err := fn(i, data); err != nil {
			return err
		}
	}
	return nil
}

// send maps reports onto the two legacy endpoints; the others have no
// legacy counterpart and are dropped.
func (l *legacySource) send(ctx context.Context, r report) error {
	var out map[string]string
	switch r.Status {
	case "verified", "failed":
		return l.post(ctx, "/ota/verify", map[string]any{"device_id": l.deviceID, "verified": r.Status == "verified", "version": r.Version}, &out)
	case "confirmed":
		return l.post(ctx, "/ota/complete", map[string]any{"device_id": l.deviceID, "version": r.Version, "boot_status": "success"}, &out)
	case "rolled-back":
		return l.post(ctx, "/ota/complete", map[string]any{"device_id": l.deviceID, "version": r.Version, "boot_status": "failed"}, &out)
	}
	return nil
}
