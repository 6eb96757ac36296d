package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/protocol"
)

// BenchmarkMACs64MiB is the memory figure of docs/PERFORMANCE.md: 32
// devices at once each fetch every chunk MAC of a 64 MiB release with
// 256-byte chunks (262,144 MACs), following short answers until they have
// them all. It reports the peak RSS the requests added to the settled
// process (Linux: VmHWM after resetting it through /proc/self/clear_refs),
// the largest answer and the requests made. Setup builds and publishes the
// release (about 10 s), so it runs only when asked for:
//
//	go test ./internal/server -run '^$' -bench MACs64MiB -benchtime 1x
func BenchmarkMACs64MiB(b *testing.B) {
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		b.Skip("needs Linux /proc to measure peak RSS")
	}
	const size, chunkSize, devices = 64 << 20, 256, 32
	e := newEnv(b)
	publishChunked(b, e, "1.0.4", size, chunkSize)
	type dev struct {
		id      string
		psk     protocol.PSK
		macsURL string
		chunks  int
	}
	devs := make([]dev, devices)
	for i := range devs {
		id := fmt.Sprintf("macs%02d", i)
		psk, _, r := e.offered(id)
		devs[i] = dev{id, psk, r.MACsURL, r.Chunks}
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: devices}}
	for _, scheme := range []protocol.ChunkMACScheme{protocol.ChunkMACv1, protocol.ChunkMACv2} {
		b.Run(string(scheme), func(b *testing.B) {
			runtime.GC()
			debug.FreeOSMemory()
			settled := procStatusKiB(b, "VmRSS")
			if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
				b.Fatalf("reset peak RSS: %v", err)
			}
			var requests, largest atomic.Int64
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make(chan error, devices)
				for _, d := range devs {
					wg.Go(func() {
						// The whole list, asked for at once and continued from
						// where each answer ends.
						for from := 0; from < d.chunks; {
							url := fmt.Sprintf("%s%s?from=%d&count=%d&mac=%s", e.http.URL, d.macsURL, from, d.chunks-from, scheme)
							req, _ := http.NewRequest("GET", url, nil)
							protocol.SignRequest(req, d.id, d.psk, nil, e.now())
							resp, err := hc.Do(req)
							if err != nil {
								errs <- err
								return
							}
							n, err := io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if err != nil || resp.StatusCode != 200 || n == 0 || n%32 != 0 {
								errs <- fmt.Errorf("%s from %d: status %d, %d bytes, %v", d.id, from, resp.StatusCode, n, err)
								return
							}
							requests.Add(1)
							if n > largest.Load() {
								largest.Store(n) // a race between stores only loses a figure already beaten
							}
							from += int(n / 32)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			peak := procStatusKiB(b, "VmHWM")
			b.ReportMetric(float64(peak-settled)/1024, "peak-added-RSS-MiB")
			b.ReportMetric(float64(settled)/1024, "settled-RSS-MiB")
			b.ReportMetric(float64(largest.Load())/(1<<20), "largest-answer-MiB")
			b.ReportMetric(float64(requests.Load())/float64(b.N), "requests/op")
		})
	}
}

// publishChunked publishes a release of size bytes in chunks of chunkSize.
func publishChunked(tb testing.TB, e *env, version string, size, chunkSize int) {
	tb.Helper()
	fw, err := firmware.Sample(firmware.SampleOptions{Version: version, Size: size})
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := bundle.Build(&out, bytes.NewReader(fw), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
		Signer: e.signer, FirmwareKey: e.fwKey, TempDir: tb.TempDir(), ChunkSize: chunkSize}); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.admin.PublishRollout(context.Background(), &out, "all"); err != nil {
		tb.Fatalf("publish %s: %v", version, err)
	}
}

// procStatusKiB reads a kB field of /proc/self/status.
func procStatusKiB(tb testing.TB, field string) int64 {
	tb.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("/proc/self/status %s: %v", field, err)
			}
			return n
		}
	}
	tb.Fatalf("/proc/self/status has no %s", field)
	return 0
}
