package attacktest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/ecowatt/fota/bundle"
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
