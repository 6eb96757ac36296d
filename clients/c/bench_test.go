package cclient_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
)

// BenchmarkUpdate16MiB times one whole update of a 16 MiB release (check,
// download, HMAC checks, decryption, SHA-256, slot writes with checkpoints,
// install) by the C client and by the Go agent against the same server in
// the same run, alternating, each on a fresh device with its slots in
// files. It reports each one's mean and the ratio C/Go (target: within
// 1.5). With the default checkpoint every 8 chunks both wait mostly for
// fsync; every 1024 chunks shows the computing:
//
//	go test ./clients/c -run '^$' -bench Update16MiB -benchtime 5x
func BenchmarkUpdate16MiB(b *testing.B) {
	srv := testserver.New(b)
	img := srv.Sample("1.0.4", firmware.Healthy, 16<<20, 0)
	srv.Publish(srv.Bundle("1.0.4", img, 0, 0))
	for _, every := range []int{8, 1024} {
		b.Run(fmt.Sprintf("checkpoint-every-%d", every), func(b *testing.B) { benchUpdate(b, srv, every) })
	}
}

var benchDevices atomic.Int64

func benchUpdate(b *testing.B, srv *testserver.Server, every int) {
	var cTime, goTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		n := benchDevices.Add(1) // the benchmark function runs again for each b.N
		d := newCDev(b, srv, fmt.Sprintf("c%d", n), 32<<20, 0)
		d.extra = []string{"--checkpoint-every", fmt.Sprint(every)}
		b.StartTimer()
		start := time.Now()
		if code := d.powerOn(); code != exitReboot {
			b.Fatalf("C client: exit %d\n%s%s", code, d.stdout, d.stderr)
		}
		cTime += time.Since(start)

		b.StopTimer()
		a := newGoDevice(b, srv, fmt.Sprintf("go%d", n), every)
		b.StartTimer()
		start = time.Now()
		if res, err := a.CheckOnce(context.Background()); err != nil || !res.Updated {
			b.Fatalf("Go agent: %+v %v", res, err)
		}
		goTime += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(cTime.Seconds()/n, "c-s/update")
	b.ReportMetric(goTime.Seconds()/n, "go-s/update")
	b.ReportMetric(cTime.Seconds()/goTime.Seconds(), "c/go")
}

// newGoDevice is a Go agent on file slots, as the simulator runs it.
func newGoDevice(b *testing.B, srv *testserver.Server, id string, checkpointEvery int) *agent.Agent {
	psk := srv.AddDeviceAPI(id, factoryVersion, "native")
	disk, err := slotfile.NewOSDisk(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { disk.Close() })
	factory := factoryImage(b, 0)
	if err := slotfile.Format(disk, 32<<20, factory, agent.Image{Version: factoryVersion, Size: int64(len(factory)), SHA256: sha256.Sum256(factory)}); err != nil {
		b.Fatal(err)
	}
	slots, err := slotfile.Open(disk, 32<<20, 3)
	if err != nil {
		b.Fatal(err)
	}
	boot, err := slots.Boot()
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(agent.Config{Server: srv.URL, DeviceID: id, PSK: psk, Hardware: "esp32", TrustedKey: srv.Signer.Public(),
		FirmwareKey: srv.FWKey, CheckpointEvery: checkpointEvery}, slots, boot)
	if err != nil {
		b.Fatal(err)
	}
	return a
}
