package mqtt

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// The scale measurement: BenchmarkBrokerConnections connects N devices
// (FOTA_MQTT_SCALE_N, default 1000) from a helper process, so the broker
// process's memory is the broker's alone, and notifies them all:
//
//	FOTA_MQTT_SCALE_N=10000 go test ./internal/mqtt -run '^$' -bench BrokerConnections -benchtime 1x
//
// FOTA_MQTT_SCALE_PROFILE=file also writes a heap profile with the N
// clients connected.

const (
	envScaleAddr    = "FOTA_MQTT_SCALE_ADDR"
	envScaleN       = "FOTA_MQTT_SCALE_N"
	envScaleProfile = "FOTA_MQTT_SCALE_PROFILE"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(envScaleAddr); addr != "" {
		n, err := strconv.Atoi(os.Getenv(envScaleN))
		if err == nil {
			err = scaleClients(addr, n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "scale clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func scaleID(i int) string { return fmt.Sprintf("scale-%05d", i) }

// scaleClients is the helper process: it connects n devices, says
// "ready", waits until each has one notification, says "received", and
// holds the connections until its stdin closes.
func scaleClients(addr string, n int) error {
	clients := make([]*rawClient, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id := scaleID(i)
				rc, err := dialRaw(addr, nil, 4)
				if err == nil {
					pk := connectPacket(id, id, password(id))
					pk.Connect.Keepalive = 600 // no PINGREQs during the measurement
					var code byte
					code, err = rc.connect(pk)
					if err == nil && code != 0 {
						err = fmt.Errorf("CONNACK %#x", code)
					}
				}
				if err == nil {
					var codes []byte
					codes, err = rc.subscribe(1, protocol.NotifyTopic(id))
					if err == nil && codes[0] != 1 {
						err = fmt.Errorf("SUBACK %#x", codes[0])
					}
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				clients[i] = rc
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Println("ready")

	for i, rc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pk, err := rc.nextPublish(10 * time.Minute)
			if err == nil && pk.TopicName != protocol.NotifyTopic(scaleID(i)) {
				err = fmt.Errorf("notification on %s", pk.TopicName)
			}
			if err != nil {
				select {
				case errs <- fmt.Errorf("%s: %w", scaleID(i), err):
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	fmt.Println("received")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return nil
}

type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

func sampleMem(tb testing.TB) memSample {
	// Several cycles: each GC halves a goroutine stack that uses under a
	// quarter of it, so the stacks grown during CONNECT settle.
	for range 4 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s := memSample{heap: m.HeapInuse, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatalf("read RSS: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			s.rss = kb << 10
		}
	}
	if s.rss == 0 {
		tb.Fatal("no VmRSS in /proc/self/status")
	}
	return s
}

func BenchmarkBrokerConnections(b *testing.B) {
	n := 1000
	if v := os.Getenv(envScaleN); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive count", envScaleN, v)
		}
	}
	ids := make([]string, n)
	f := newFleet()
	for i := range ids {
		ids[i] = scaleID(i)
	}
	f = newFleet(ids...)
	br := startBroker(b, f, nil)
	before := sampleMem(b)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envScaleAddr+"="+br.Addr().String(), envScaleN+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("helper: %v", err)
		}
	}()
	lines := bufio.NewScanner(stdout)
	expect := func(want string) {
		b.Helper()
		if !lines.Scan() || lines.Text() != want {
			b.Fatalf("helper said %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	expect("ready")
	connectTime := time.Since(start)
	if got := br.Stats().Connected; got != int64(n) {
		b.Fatalf("%d connected, want %d", got, n)
	}
	after := sampleMem(b)
	if p := os.Getenv(envScaleProfile); p != "" {
		fh, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(fh, 0); err != nil {
			b.Fatal(err)
		}
		fh.Close()
	}

	start = time.Now()
	br.Notify(ids, protocol.Notification{Reason: protocol.NotifyRollout, Rollout: 1})
	expect("received")
	notifyTime := time.Since(start)
	if s := br.Stats(); s.Published != uint64(n) || s.Dropped != 0 {
		b.Fatalf("stats %+v, want %d published, none dropped", s, n)
	}

	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	b.ReportMetric(per(after.heap, before.heap), "heap-B/conn")
	b.ReportMetric(per(after.stack, before.stack), "stack-B/conn")
	b.ReportMetric(per(after.rss, before.rss), "rss-B/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(float64(after.rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(notifyTime.Milliseconds()), "notify-all-ms")
	b.ReportMetric(float64(connectTime.Milliseconds()), "connect-all-ms")
}
