package attacktest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/testserver"
)

// DeltaAttack is a man in the middle's rewrite of a check answer that
// offers a release which has deltas, with signed envelopes it recorded.
// Every native-API client that takes deltas must install nothing but the
// release's signed image, count nothing against the release or its
// rollout, and end on the release (by the honest answer's full image when
// the attack cost it the delta); the Go agent's tests and the C client's
// run the same rows.
type DeltaAttack struct {
	Name string
	// Want is what the device's first failure says (both clients use the
	// same words); "" when the attack must cause no failure at all.
	Want string
	// Edit rewrites the first check answer offering an update (a JSON
	// object, decoded); full is the release's signed envelope, deltas the
	// release's delta envelopes as the bundle has them: from the device's
	// base (1.0.3), then from 1.0.2.
	Edit func(answer map[string]any, full *bundle.Envelope, deltas []*bundle.Envelope)
	// NoDelta: the device under attack takes full images only.
	NoDelta bool
}

// DeltaAttacks is the table.
func DeltaAttacks() []DeltaAttack {
	return []DeltaAttack{
		{Name: "a delta for another base", Want: "the patch is for 1.0.2", Edit: func(c map[string]any, _ *bundle.Envelope, deltas []*bundle.Envelope) {
			if c["artifact"] == "delta" {
				putEnvelope(c, deltas[1])
			}
		}},
		{Name: "a delta manifest offered as the full image", Want: `the signed manifest is of kind "delta"`, Edit: func(c map[string]any, _ *bundle.Envelope, _ []*bundle.Envelope) {
			delete(c, "artifact")
		}},
		// The release's full manifest (public: every full-image device
		// gets it) put into a delta session's answer, with or without the
		// artifact: the device installs what is signed, a full image, and
		// the session's chunks run out before the signed ciphertext does.
		{Name: "the full manifest offered as a delta", Want: "the session serves another artifact", Edit: func(c map[string]any, full *bundle.Envelope, _ []*bundle.Envelope) {
			if c["artifact"] == "delta" {
				putEnvelope(c, full)
			}
		}},
		{Name: "the full manifest put into a delta session", Want: "the session serves another artifact", Edit: func(c map[string]any, full *bundle.Envelope, _ []*bundle.Envelope) {
			if c["artifact"] == "delta" {
				putEnvelope(c, full)
				delete(c, "artifact")
			}
		}},
		// A full image's answer said to be a delta: the signed kind
		// decides, and the image installs as if nothing happened.
		{Name: "a full image's answer said to be a delta", Edit: func(c map[string]any, _ *bundle.Envelope, _ []*bundle.Envelope) {
			c["artifact"] = "delta"
		}, NoDelta: true},
	}
}

// putEnvelope makes a check answer offer e's manifest, signature and
// ciphertext size (the session and its chunks stay the answer's).
func putEnvelope(c map[string]any, e *bundle.Envelope) {
	m, _ := e.Unverified()
	c["manifest"], c["signature"] = base64.StdEncoding.EncodeToString(e.ManifestBytes), base64.StdEncoding.EncodeToString(e.Signature)
	c["chunks"], c["ciphertext_size"] = m.Chunks(), m.CiphertextSize
}

// DeltaEnvelopes reads a bundle's release envelope and its first n delta
// envelopes: what an attacker could have recorded of a published release.
func DeltaEnvelopes(b []byte, n int) (*bundle.Envelope, []*bundle.Envelope, error) {
	r := bytes.NewReader(b)
	env, err := bundle.ReadEnvelope(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read the release envelope: %w", err)
	}
	full, err := env.Unverified()
	if err != nil {
		return nil, nil, fmt.Errorf("read the release manifest: %w", err)
	}
	if _, err := r.Seek(env.PayloadOffset()+full.CiphertextSize, io.SeekStart); err != nil {
		return nil, nil, err
	}
	var deltas []*bundle.Envelope
	for i := range n {
		denv, err := bundle.ReadDelta(r)
		if err != nil {
			return nil, nil, fmt.Errorf("read delta %d: %w", i, err)
		}
		dm, err := denv.Unverified()
		if err != nil {
			return nil, nil, fmt.Errorf("read delta %d's manifest: %w", i, err)
		}
		if _, err := r.Seek(dm.CiphertextSize, io.SeekCurrent); err != nil {
			return nil, nil, err
		}
		deltas = append(deltas, denv)
	}
	return env, deltas, nil
}

// FaultyDelta is a validly signed delta that cannot make the release's
// image on a device running base: what a release engineer's mistake (or a
// wrong --delta-from) would publish. Every client that takes deltas must
// catch it before marking the slot, report a delta failure and install the
// full image; the Go agent's tests and the C client's run the same rows.
type FaultyDelta struct {
	Name  string
	Patch []byte
}

// FaultyDeltas are the patches from base meant to make target: made
// against another image (other), claiming an image larger than a slot of
// slotSize bytes, cut short, making an image that fails the signed hash,
// and bytes that are no patch at all.
func FaultyDeltas(tb testing.TB, base, target, other []byte, slotSize int) []FaultyDelta {
	tb.Helper()
	mk := func(from, to []byte) []byte {
		p, err := delta.Create(from, to, delta.CreateOptions{Compression: "heatshrink"})
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), target...)
	flipped[len(flipped)/2] ^= 0xff
	real := mk(base, target)
	return []FaultyDelta{
		{"made against another base", mk(other, target)},
		{"writes past the slot", mk(base, make([]byte, slotSize+4096))},
		{"truncated", real[:len(real)*2/3]},
		{"output fails the hash", mk(base, flipped)},
		{"not a patch", bytes.Repeat([]byte{0xa5}, 3000)},
	}
}

// CheckDeltaAndFull checks what a test that updated one device by a delta
// (compression) and one by the full image put on the wire: one session of
// each, the full one the release's size, and (compressed) a delta under a
// quarter of it.
func CheckDeltaAndFull(tb testing.TB, srv *testserver.Server, compression string, imageSize int) {
	tb.Helper()
	tr, err := srv.Store.Traffic(context.Background(), fota.TrafficFilter{})
	if err != nil {
		tb.Fatal(err)
	}
	if tr.DeltaSessions != 1 || tr.FullSessions != 1 || tr.DeltaBytes <= 0 || tr.FullBytes != tr.DeltaFullBytes {
		tb.Fatalf("traffic %+v: want one delta and one full session, the full one the release's size", tr)
	}
	tb.Logf("%s: %d KiB image: delta %d bytes on the wire, full image %d (%.1f%%)",
		compression, imageSize>>10, tr.DeltaBytes, tr.FullBytes, 100*float64(tr.DeltaBytes)/float64(tr.FullBytes))
	if compression != "none" && tr.DeltaBytes*4 > tr.FullBytes {
		tb.Fatalf("delta of %d bytes is more than a quarter of the full image's %d", tr.DeltaBytes, tr.FullBytes)
	}
}

// FirstOffer is a Check rewrite that edits only the first check answer
// offering an update (decoded as a JSON object) and passes every other
// answer on, so the honest answer after the attack gets through.
type FirstOffer struct {
	mu       sync.Mutex
	attacked bool
	edit     func(answer map[string]any)
}

// EditFirstOffer returns a FirstOffer that applies edit; set its Check as
// the MITM's.
func EditFirstOffer(edit func(answer map[string]any)) *FirstOffer {
	return &FirstOffer{edit: edit}
}

// Check is the MITM.Check function.
func (f *FirstOffer) Check(orig []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var a map[string]any
	if json.Unmarshal(orig, &a) != nil || a["update"] != true || f.attacked {
		return orig
	}
	f.attacked = true
	f.edit(a)
	out, _ := json.Marshal(a)
	return out
}

// Attacked reports whether an answer was edited.
func (f *FirstOffer) Attacked() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attacked
}
