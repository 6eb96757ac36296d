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
// Every native-API client that takes deltas must treat each as a failed
// delta (reported, never an install) and then take the honest answer's
// full image; the Go agent's tests and the C client's run the same rows.
type DeltaAttack struct {
	Name string
	// Want is what the device's first failure says (both clients use the
	// same words).
	Want string
	// Edit rewrites the first check answer offering an update (a JSON
	// object, decoded); full is the release's signed envelope, deltas the
	// release's delta envelopes as the bundle has them: from the device's
	// base (1.0.3), then from 1.0.2.
	Edit func(answer map[string]any, full *bundle.Envelope, deltas []*bundle.Envelope)
}

// DeltaAttacks is the table: a delta for another base, a delta manifest
// offered as the full image, the full manifest offered as a delta.
func DeltaAttacks() []DeltaAttack {
	return []DeltaAttack{
		{"a delta for another base", "the patch is for 1.0.2", func(c map[string]any, _ *bundle.Envelope, deltas []*bundle.Envelope) {
			if c["artifact"] == "delta" {
				putEnvelope(c, deltas[1])
			}
		}},
		{"a delta manifest offered as the full image", `the signed manifest is of kind "delta"`, func(c map[string]any, _ *bundle.Envelope, _ []*bundle.Envelope) {
			delete(c, "artifact")
		}},
		{"the full manifest offered as a delta", `the signed manifest is of kind ""`, func(c map[string]any, full *bundle.Envelope, _ []*bundle.Envelope) {
			if c["artifact"] == "delta" {
				putEnvelope(c, full)
			}
		}},
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
