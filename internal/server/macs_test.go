package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

// getMACs asks for count MACs from chunk from and returns the answer and
// its Content-Length.
func (e *env) getMACs(t *testing.T, id string, psk protocol.PSK, r *protocol.CheckResponse, scheme protocol.ChunkMACScheme, from, count int) ([]byte, int64) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s%s?from=%d&count=%d&mac=%s", e.http.URL, r.MACsURL, from, count, scheme), nil)
	protocol.SignRequest(req, id, psk, nil, e.now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("macs from %d count %d (%s): %d %s %v", from, count, scheme, resp.StatusCode, body, err)
	}
	if len(body)%32 != 0 {
		t.Fatalf("macs from %d (%s): %d bytes, not whole MACs", from, scheme, len(body))
	}
	return body, resp.ContentLength
}

// payloadOf fetches a session's whole ciphertext from its payload URL.
func (e *env) payloadOf(t testing.TB, r *protocol.CheckResponse) []byte {
	t.Helper()
	resp, err := http.Get(e.http.URL + r.PayloadURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ct, err := io.ReadAll(resp.Body)
	if err != nil || int64(len(ct)) != r.CiphertextSize {
		t.Fatalf("payload: %d of %d bytes, %v", len(ct), r.CiphertextSize, err)
	}
	return ct
}

// wantMACs is every chunk MAC of a session in a scheme, as a device computes them.
func wantMACs(psk protocol.PSK, r *protocol.CheckResponse, scheme protocol.ChunkMACScheme, ct []byte) []byte {
	out := make([]byte, 0, 32*r.Chunks)
	for i := range r.Chunks {
		mac := protocol.ChunkMAC(psk, r.SessionID, scheme, i, ct[i*r.ChunkSize:min((i+1)*r.ChunkSize, len(ct))])
		out = append(out, mac[:]...)
	}
	return out
}

// A release of 36,865 chunks has 1.1 MiB of MACs: asked for at once they
// come in pages of at most 1 MiB, each continuing where the last ended,
// and together they are the whole list, in both schemes.
func TestNativeMACsPaging(t *testing.T) {
	e := newEnv(t)
	publishChunked(t, e, "1.0.4", 9<<20, 256)
	psk, _, r := e.offered("dev1")
	if r.Chunks*32 <= 1<<20 { // the limit docs/PROTOCOL.md promises
		t.Fatalf("%d chunks: the list fits one answer, nothing is paged", r.Chunks)
	}
	ct := e.payloadOf(t, r)
	for _, scheme := range protocol.ChunkMACSchemes {
		t.Run(string(scheme), func(t *testing.T) {
			want := wantMACs(psk, r, scheme, ct)
			var got []byte
			pages := 0
			for from := 0; from < r.Chunks; pages++ {
				page, length := e.getMACs(t, "dev1", psk, r, scheme, from, r.Chunks-from)
				if len(page) > 1<<20 || len(page) == 0 {
					t.Fatalf("page from %d: %d bytes, want 1 to %d", from, len(page), 1<<20)
				}
				if length != int64(len(page)) {
					// Said up front, so a device knows where the next page starts before the last byte.
					t.Fatalf("page from %d: Content-Length %d for %d bytes", from, length, len(page))
				}
				got = append(got, page...)
				from += len(page) / 32
			}
			if pages != 2 || !bytes.Equal(got, want) {
				t.Fatalf("%d pages, %d bytes of MACs; want 2 pages of the %d bytes computed from the payload (equal: %v)",
					pages, len(got), len(want), bytes.Equal(got, want))
			}
			// Any page on its own, far ahead of a download that has not
			// begun, clipped at the last chunk; count 1 when left out.
			last := r.Chunks - 3
			if page, _ := e.getMACs(t, "dev1", psk, r, scheme, last, 10); !bytes.Equal(page, want[last*32:]) {
				t.Fatalf("the last 3 MACs: %d bytes differ", len(page))
			}
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s%s?from=7&mac=%s", e.http.URL, r.MACsURL, scheme), nil)
			protocol.SignRequest(req, "dev1", psk, nil, e.now())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			one, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(one, want[7*32:8*32]) {
				t.Fatalf("from=7 without count: %d bytes, want MAC 7", len(one))
			}
		})
	}
}

// v1 MACs are computed over the chunk bytes on every request, so a v1
// answer vouches for at most as much data as a chunks answer carries
// (16 MiB); v2 answers come from cached digests and are bounded by size
// only.
func TestNativeV1MACsBoundedByData(t *testing.T) {
	e := newEnv(t)
	publishChunked(t, e, "1.0.4", maxChunksResponse, 64<<10)
	psk, _, r := e.offered("dev1")
	ct := e.payloadOf(t, r)
	perV1 := maxChunksResponse / r.ChunkSize
	if r.Chunks <= perV1 {
		t.Fatalf("%d chunks of %d bytes fit one v1 answer", r.Chunks, r.ChunkSize)
	}
	for scheme, want := range map[protocol.ChunkMACScheme]int{protocol.ChunkMACv1: perV1, protocol.ChunkMACv2: r.Chunks} {
		page, _ := e.getMACs(t, "dev1", psk, r, scheme, 0, r.Chunks)
		if len(page) != 32*want {
			t.Fatalf("%s: %d MACs in the first answer, want %d", scheme, len(page)/32, want)
		}
		all := wantMACs(psk, r, scheme, ct)
		if rest, _ := e.getMACs(t, "dev1", psk, r, scheme, want-1, r.Chunks); !bytes.Equal(append(page[:32*(want-1)], rest...), all) {
			t.Fatalf("%s: the pages differ from the MACs computed from the payload", scheme)
		}
	}
}
