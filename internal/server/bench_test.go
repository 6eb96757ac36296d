package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/protocol"
)

// benchSession publishes a release of size bytes and opens a session for
// one device on the given API.
func benchSession(b *testing.B, size int, api string) (*env, protocol.PSK, *protocol.CheckResponse) {
	e := newEnv(b)
	e.publish("1.0.4", size)
	psk := e.addDevice("bench", "1.0.3")
	if api == "ecowatt" {
		status, body := e.call("POST", "/ota/check", `{"device_id":"bench","current_version":"1.0.3"}`, nil)
		if status != 200 {
			b.Fatalf("check: %d %v", status, body)
		}
		return e, psk, &protocol.CheckResponse{Chunks: int(body["total_chunks"].(float64)), ChunkSize: 1024}
	}
	d, _ := client.NewDevice(e.http.URL, "bench", psk)
	d.Now = e.now
	r, err := d.Check(context.Background(), protocol.CheckRequest{Version: "1.0.3"})
	if err != nil {
		b.Fatal(err)
	}
	return e, psk, r
}

// BenchmarkLegacyChunkHandler measures the server side of one
// /ota/chunk request (no network): allocations per chunk served.
func BenchmarkLegacyChunkHandler(b *testing.B) {
	e, _, r := benchSession(b, 256<<10, "ecowatt")
	bodies := make([]string, r.Chunks)
	for i := range bodies {
		bodies[i] = fmt.Sprintf(`{"device_id":"bench","version":"1.0.4","chunk_number":%d}`, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest("POST", "/ota/chunk", strings.NewReader(bodies[i%len(bodies)]))
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("chunk: %d %s", w.Code, w.Body)
		}
		i++
	}
}

// BenchmarkNativeChunksHandler measures the server side of a native
// chunks request of 16 chunks (no network); allocs are per request.
func BenchmarkNativeChunksHandler(b *testing.B) {
	for _, scheme := range protocol.ChunkMACSchemes {
		b.Run(string(scheme), func(b *testing.B) {
			e, psk, r := benchSession(b, 256<<10, "native")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				from := (i * 16) % (r.Chunks - 16)
				req := httptest.NewRequest("GET", fmt.Sprintf("%s?from=%d&count=16&mac=%s", r.ChunksURL, from, scheme), nil)
				protocol.SignRequest(req, "bench", psk, nil, e.now())
				w := httptest.NewRecorder()
				e.srv.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("chunks: %d %s", w.Code, w.Body)
				}
				i++
			}
			b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// BenchmarkDownload1MiB downloads a whole 1 MiB release over loopback
// HTTP with keep-alive, through each API, checking every chunk's HMAC.
func BenchmarkDownload1MiB(b *testing.B) {
	b.Run("ecowatt", func(b *testing.B) {
		e, psk, r := benchSession(b, 1<<20, "ecowatt")
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
		b.SetBytes(1 << 20)
		for b.Loop() {
			for n := 0; n < r.Chunks; n++ {
				resp, err := hc.Post(e.http.URL+"/ota/chunk", "application/json",
					strings.NewReader(fmt.Sprintf(`{"device_id":"bench","version":"1.0.4","chunk_number":%d}`, n)))
				if err != nil {
					b.Fatal(err)
				}
				var out struct {
					Chunk struct {
						Data []byte `json:"data"`
						HMAC string `json:"hmac"`
					} `json:"chunk"`
				}
				if err := jsonDecode(resp.Body, &out); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				mac := protocol.LegacyChunkMAC(psk, n, out.Chunk.Data)
				if fmt.Sprintf("%x", mac) != out.Chunk.HMAC {
					b.Fatalf("chunk %d: bad HMAC", n)
				}
			}
		}
		b.ReportMetric(float64(b.N*r.Chunks)/b.Elapsed().Seconds(), "chunks/s")
	})
	for _, scheme := range protocol.ChunkMACSchemes {
		b.Run("native-"+string(scheme), func(b *testing.B) {
			e, psk, r := benchSession(b, 1<<20, "native")
			d, _ := client.NewDevice(e.http.URL, "bench", psk)
			d.Now = e.now
			b.SetBytes(1 << 20)
			var sink bytes.Buffer
			for b.Loop() {
				for from := 0; from < r.Chunks; from += 256 {
					if err := d.Chunks(context.Background(), r.SessionID, scheme, from, 256, r.ChunkSize, func(f protocol.Frame) error {
						sink.Write(f.Data)
						return nil
					}); err != nil {
						b.Fatal(err)
					}
				}
				sink.Reset()
			}
			b.ReportMetric(float64(b.N*r.Chunks)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// BenchmarkNativeCheck measures the server side of one check-in (no
// network): a device already running the newest release, as most of a
// fleet's check-ins are.
func BenchmarkNativeCheck(b *testing.B) {
	e := newEnv(b)
	e.publish("1.0.4", 4096)
	psk := e.addDevice("bench", "1.0.4")
	body := []byte(`{"version":"1.0.4","hardware":"esp32"}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/device/check", bytes.NewReader(body))
		protocol.SignRequest(req, "bench", psk, body, e.now())
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("check: %d %s", w.Code, w.Body)
		}
	}
}
