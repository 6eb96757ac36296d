package cclient_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/testserver"
)

// TestDeltaManifestOnFullSessionNotCounted: a keyless man in the middle
// must not make the server count a failure against the rollout with two
// check-answer rewrites and no chunk touched (it could, before a patch's
// bad padding was made a delta failure):
//
//  1. The first (delta) answer gets the other base's delta manifest: a delta
//     failure, uncounted, and the server offers this device the full image
//     from now on (pickDelta).
//  2. The re-check's answer (a FULL session) gets the device's own, public,
//     signed delta manifest with "artifact":"delta". When the patch's
//     ciphertext is one chunk (patch ciphertext == chunk_size), the server's
//     chunk 0 of the full image has exactly the expected length and a good
//     MAC; the C client checks the PKCS#7 padding of this "last" chunk
//     before the patcher sees a byte, so the failure is FOTA_ERR_DECRYPT,
//     reported as a plain "failed" on a full session: counted.
func TestDeltaManifestOnFullSessionNotCounted(t *testing.T) {
	srv0 := testserver.New(t)
	base := cLineage(srv0, factoryVersion, cDeltaImageSize, 512, false)
	target := cLineage(srv0, "1.0.4", cDeltaImageSize, 512, true)
	other := cLineage(srv0, "1.0.2", cDeltaImageSize, 512, true)
	patch, err := delta.Create(base, target, delta.CreateOptions{Compression: "heatshrink"})
	if err != nil {
		t.Fatal(err)
	}
	chunk := (len(patch)/16 + 1) * 16 // the patch's ciphertext is exactly one chunk
	if chunk < 256 || chunk > 65536 {
		t.Fatalf("patch %d B: no chunk size fits", len(patch))
	}
	if target[chunk-1] >= 1 && target[chunk-1] <= 16 {
		t.Fatalf("image byte %d happens to look like padding: pick another pair", chunk-1)
	}
	t.Logf("patch %d B, chunk size %d", len(patch), chunk)

	srv := testserver.New(t)
	b := srv.BundleWithDeltas("1.0.4", target, chunk, 0,
		testserver.DeltaBase{Version: factoryVersion, Image: base, Patch: patch},
		testserver.DeltaBase{Version: "1.0.2", Image: other})
	srv.Publish(b)
	_, deltas, err := attacktest.DeltaEnvelopes(b, 2)
	if err != nil {
		t.Fatal(err)
	}
	put := func(a map[string]any, i int) {
		dm, _ := deltas[i].Unverified()
		a["artifact"] = "delta"
		a["manifest"], a["signature"] = base64.StdEncoding.EncodeToString(deltas[i].ManifestBytes), base64.StdEncoding.EncodeToString(deltas[i].Signature)
		a["chunks"], a["ciphertext_size"] = dm.Chunks(), dm.CiphertextSize
	}
	m := attacktest.NewMITM(t, srv.URL)
	var mu sync.Mutex
	n := 0
	m.Check = func(orig []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		var a map[string]any
		json.Unmarshal(orig, &a)
		if a["update"] != true {
			return orig
		}
		n++
		switch n {
		case 1: // the delta session: another base's delta (uncounted delta failure)
			put(a, 1)
		case 2: // the full session: this device's own delta manifest
			if a["artifact"] == "delta" {
				t.Errorf("second answer is a delta session")
			}
			put(a, 0)
		default:
			return orig
		}
		out, _ := json.Marshal(a)
		return out
	}
	m.Settle()
	d := newCDevOn(t, srv, "a2-pad", slotSize, 0, base)
	d.server = m.URL
	code := d.powerOn()
	t.Logf("exit %d %s\n%s", code, d.errorCode(), d.stderr)
	for _, s := range srv.Sessions(d.id) {
		t.Logf("session delta=%t %s %q", s.DeltaBase != "", s.State, s.Reason)
	}
	ro, err := srv.Admin.Rollout(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if ro.Counts.Failed != 0 {
		t.Errorf("rollout counts %+v: two rewritten check answers (no chunk touched) counted a failure against the rollout", ro.Counts)
	}
	if strings.Contains(d.stderr, "decryption failed: bad padding") {
		t.Errorf("the C client judged the padding of a chunk the signed delta says is the patch's before the patcher: FOTA_ERR_DECRYPT, not a delta failure")
	}
}

// TestShortFrameHeadKeepsDownload: on a full image's session, one
// rewritten 4-byte length in a chunk frame's (unauthenticated) head must
// not be taken as "the session serves another artifact" (it was, before
// the short frame's MAC was checked first): the download goes on, in the
// delta build as in the build without FOTA_DELTA.
func TestShortFrameHeadKeepsDownload(t *testing.T) {
	for _, full := range []bool{false, true} {
		name := "delta-build"
		if full {
			name = "full-build"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t)
			base := cLineage(srv, factoryVersion, cDeltaImageSize, 512, false)
			target := cLineage(srv, "1.0.4", cDeltaImageSize, 512, true)
			srv.Publish(srv.BundleWithDeltas("1.0.4", target, 1024, 0)) // no deltas: a full session
			m := attacktest.NewMITM(t, srv.URL)
			var mu sync.Mutex
			requests := 0
			m.Chunks = func(req *http.Request, body []byte) []byte {
				mu.Lock()
				defer mu.Unlock()
				requests++
				if requests != 3 || len(body) < 40 {
					return body
				}
				out := append([]byte(nil), body...)
				l := binary.BigEndian.Uint32(out[4:8])
				binary.BigEndian.PutUint32(out[4:8], l-16)
				return out
			}
			m.Settle()
			d := newCDevOn(t, srv, "a2-frame-"+name, slotSize, 0, base)
			if full {
				d.useFullBuild()
			}
			d.server = m.URL
			d.extra = []string{"--checkpoint-every", "2", "--chunks-per-request", "4", "-v"}
			code := d.powerOn()
			t.Logf("exit %d %s\n%s", code, d.errorCode(), d.stderr)
			for _, s := range srv.Sessions(d.id) {
				t.Logf("session delta=%t %s next=%d/%d %q", s.DeltaBase != "", s.State, s.NextChunk, s.TotalChunks, s.Reason)
			}
			if strings.Contains(d.stderr, "downloading 1.0.4: chunk 0 of") && strings.Count(d.stderr, "downloading 1.0.4: chunk 0 of") > 1 {
				t.Errorf("one rewritten frame length (no MAC failure) threw away %s's download progress and its session", name)
			}
		})
	}
}
