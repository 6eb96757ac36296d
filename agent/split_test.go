package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

func (h *harness) publishChunked(version string, img []byte, chunkSize int) {
	h.Publish(h.Bundle(version, img, chunkSize, 0))
}

// The slot holds exactly the firmware whatever sizes its ciphertext came
// in: chunk sizes from 256 bytes to 64 KiB, one to many chunks a request,
// on both APIs, with checkpoints falling anywhere.
func TestSlotIdenticalForAnyChunking(t *testing.T) {
	img, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.4", Size: 150_000})
	for _, chunkSize := range []int{256, 1024, 4096, 65536} {
		for _, perRequest := range []int{1, 3, 16} {
			for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
				if api == agent.APIEcoWatt && (perRequest > 1 || chunkSize > 1024) {
					// The legacy API fetches one chunk a request, and offers no
					// release whose chunks the original firmware cannot take
					// (internal/update tests that).
					continue
				}
				t.Run(fmt.Sprintf("%s/chunk%d/per%d", api, chunkSize, perRequest), func(t *testing.T) {
					h := newHarness(t)
					h.publishChunked("1.0.4", img, chunkSize)
					d := newDev(h, "dev1", api)
					d.configHook = func(c *agent.Config) { c.ChunksPerRequest = perRequest; c.CheckpointEvery = 5 }
					if err := d.powerOn(); err != nil {
						t.Fatal(err)
					}
					if res, err := d.agent.CheckOnce(context.Background()); err != nil || !res.Updated {
						t.Fatalf("%+v %v", res, err)
					}
					got := make([]byte, len(img))
					d.slots.ReadAt(1, got, 0)
					if !bytes.Equal(got, img) {
						t.Fatal("slot content differs from the firmware")
					}
				})
			}
		}
	}
}

// BenchmarkAgentMemory updates a 1 MiB and a 32 MiB image from a fota
// server running in its own process (so its memory is not counted) and
// reports the agent's peak live heap while updating (sampled every 512
// chunks, after a collection). The agent streams,
// so the two must be within 256 KiB of each other.
func BenchmarkAgentMemory(b *testing.B) {
	srv := startServerProcess(b)
	peaks := map[int]uint64{}
	for i, size := range []int{1 << 20, 32 << 20} {
		version := fmt.Sprintf("1.0.%d", 4+i)
		srv.publish(version, size)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			var peak uint64
			n := 0
			for b.Loop() {
				n++
				d := srv.newDevice(b, fmt.Sprintf("mem-%d-%d", i, n), 40<<20)
				runtime.GC()
				var base runtime.MemStats
				runtime.ReadMemStats(&base)
				d.configHook = func(c *agent.Config) {
					c.OnProgress = func(p agent.Progress) {
						if p.Chunk%512 != 0 && p.State == agent.StateDownloading {
							return
						}
						// Live heap: collect first, so garbage awaiting the
						// collector is not mistaken for growth.
						runtime.GC()
						var ms runtime.MemStats
						runtime.ReadMemStats(&ms)
						if ms.HeapAlloc > base.HeapAlloc && ms.HeapAlloc-base.HeapAlloc > peak {
							peak = ms.HeapAlloc - base.HeapAlloc
						}
					}
				}
				if err := d.powerOn(); err != nil {
					b.Fatal(err)
				}
				if res, err := d.agent.CheckOnce(context.Background()); err != nil || !res.Updated || res.Version != version {
					b.Fatalf("%+v %v", res, err)
				}
				d.disk.Close()
			}
			peaks[size] = peak
			b.ReportMetric(float64(peak)/1024, "peak-heap-KiB")
			b.SetBytes(int64(size))
		})
	}
	if small, big := peaks[1<<20], peaks[32<<20]; small > 0 && big > 0 {
		diff := int64(big) - int64(small)
		b.Logf("peak heap while updating: 1 MiB image %d KiB, 32 MiB image %d KiB, difference %d KiB", small/1024, big/1024, diff/1024)
		if diff > 256<<10 {
			b.Fatalf("agent memory grows with the image: +%d KiB for 32 MiB", diff/1024)
		}
	}
}
