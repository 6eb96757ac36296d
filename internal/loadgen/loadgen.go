// Package loadgen runs a simulated fleet against a fota server for capacity
// planning: it registers devices, publishes a release for a hardware name of
// its own (so the real fleet is never offered it), and drives every device
// through a complete update with the real agent, real HMAC checks, real
// decryption, real SHA-256 and signature checks, and no flash writes. It
// measures what an operator sizes a deployment by.
package loadgen

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// Config describes a load run.
type Config struct {
	Server      string
	Token       string
	Devices     int
	API         string        // agent.APINative or agent.APIEcoWatt
	ReleaseSize int           // firmware bytes
	Rate        float64       // device starts per second; 0 starts all at once
	Duration    time.Duration // stop after this long; 0 runs until every device is done
	Signer      *keys.SigningKey
	FirmwareKey keys.FirmwareKey
	// ChunksPerRequest on the native API (the agent's default when 0).
	ChunksPerRequest int
	// ChunkDelay is slept before every chunk request: slow devices, to hold
	// many sessions open at once.
	ChunkDelay time.Duration
	// NoKeepAlive opens a new TCP connection for every request, as the
	// original EcoWatt ESP32 client does: slow devices then hold sessions
	// open without holding connections.
	NoKeepAlive bool
	// CheckOnly runs devices that already run the release: each makes one
	// check-in and nothing else, to measure check-in capacity.
	CheckOnly bool
	// Verify is what each device checks: VerifyFull (the default) runs the
	// real agent; VerifyHMAC checks the manifest signature and every
	// chunk's HMAC and skips decryption and hashing, so that one load
	// core can keep up with a server feeding many devices (native API).
	Verify string
	// OnProgress receives a snapshot every second.
	OnProgress func(Snapshot)
	// Keep leaves the run's devices and release on the server. By default
	// Run removes them at the end (the devices removed, the release
	// deleted), so a run against a production server leaves only history,
	// which retention prunes.
	Keep bool
}

// What a simulated device checks of an update.
const (
	VerifyFull = "full"
	VerifyHMAC = "hmac"
)

// Snapshot is the run so far.
type Snapshot struct {
	Elapsed              time.Duration
	Started, Done, Fails int
	Chunks               int64
}

// Latency summarises one kind of request.
type Latency struct {
	Count         int           `json:"count"`
	P50, P99, Max time.Duration `json:"-"`
	P50ms         float64       `json:"p50_ms"`
	P99ms         float64       `json:"p99_ms"`
	MaxMs         float64       `json:"max_ms"`
}

// Report is the result of a run.
type Report struct {
	// Run names the run's data: its release is for hardware "load-<run>"
	// and its devices are "load-<run>-NNNNN".
	Run                string         `json:"run"`
	Kept               bool           `json:"kept"` // the devices and release were left on the server
	API                string         `json:"api"`
	Devices            int            `json:"devices"`
	Completed          int            `json:"updates_completed"`
	Failed             int            `json:"updates_failed"`
	ReleaseBytes       int64          `json:"release_bytes"`
	CiphertextBytes    int64          `json:"ciphertext_bytes"`
	Elapsed            time.Duration  `json:"-"`
	Seconds            float64        `json:"seconds"`
	Chunks             int64          `json:"chunks"`
	ChunksPerSecond    float64        `json:"chunks_per_second"`
	MiBPerSecond       float64        `json:"firmware_mib_per_second"`
	Check              Latency        `json:"check_latency"`
	Chunk              Latency        `json:"chunk_latency"`
	WireBytesPerUpdate float64        `json:"wire_bytes_per_update"`
	ConnsPerUpdate     float64        `json:"tcp_connections_per_update"`
	Errors             map[string]int `json:"errors"`
}

// stats is shared by every device of a run.
type stats struct {
	mu       sync.Mutex
	check    []time.Duration
	chunk    []time.Duration
	errors   map[string]int
	chunks   atomic.Int64
	wire     atomic.Int64
	conns    atomic.Int64
	started  atomic.Int64
	done     atomic.Int64
	failed   atomic.Int64
	lastErrs []string
	// sources hands out loopback source addresses, one device after another.
	sources atomic.Uint32
}

func (s *stats) record(path string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.HasSuffix(path, "/check"):
		s.check = append(s.check, d)
	case strings.HasSuffix(path, "/chunks") || strings.HasSuffix(path, "/ota/chunk"):
		s.chunk = append(s.chunk, d)
	}
}

func (s *stats) fail(err error) {
	s.failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors[errorKind(err)]++
}

// errorKind groups errors for the report.
func errorKind(err error) string {
	var ae *client.APIError
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("http %d: %s", ae.Status, ae.Code)
	case errors.Is(err, agent.ErrChunkMAC):
		return "chunk HMAC mismatch"
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "connection"
	case errors.Is(err, context.Canceled):
		return "stopped"
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}

// transport times requests and counts connections and bytes.
type transport struct {
	inner *http.Transport
	st    *stats
	delay time.Duration // before chunk requests
}

// loopbackSources is how many 127.0.0.0/8 addresses devices are spread
// over when the server is on loopback.
const loopbackSources = 250

func newTransport(st *stats, noKeepAlive bool) *transport {
	// Each simulated device connects from its own loopback address when the
	// server is on this machine, as real devices come from their own: the
	// server caps connections per client address, and a fleet from one
	// address would look like one client holding hundreds.
	source := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(st.sources.Add(1)%loopbackSources+1))}
	plain := &net.Dialer{Timeout: 10 * time.Second}
	spread := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: source}
	t := &transport{st: st}
	t.inner = &http.Transport{
		MaxIdleConnsPerHost: 2,
		DisableKeepAlives:   noKeepAlive,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialer := plain
			if host, _, err := net.SplitHostPort(addr); err == nil {
				if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsLoopback() {
					dialer = spread
				}
			}
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			st.conns.Add(1)
			return &countingConn{Conn: c, n: &st.wire}, nil
		},
	}
	return t
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.delay > 0 && (strings.HasSuffix(req.URL.Path, "/chunks") || strings.HasSuffix(req.URL.Path, "/ota/chunk")) {
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(t.delay):
		}
	}
	start := time.Now()
	resp, err := t.inner.RoundTrip(req)
	if err == nil {
		t.st.record(req.URL.Path, time.Since(start))
	}
	return resp, err
}

// CountingClient is an HTTP client whose connections add every byte they
// carry, both ways, to n: what a device moves over the wire.
func CountingClient(n *atomic.Int64) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: n}, nil
		},
	}}
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Run performs a load run.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if cfg.Devices < 1 {
		return nil, errors.New("load: at least one device")
	}
	if cfg.API == "" {
		cfg.API = agent.APINative
	}
	switch cfg.Verify {
	case "":
		cfg.Verify = VerifyFull
	case VerifyFull:
	case VerifyHMAC:
		if cfg.API != agent.APINative || cfg.CheckOnly {
			return nil, errors.New("load: HMAC-only devices need the native API and a download")
		}
	default:
		return nil, fmt.Errorf("load: verify %q: want %s or %s", cfg.Verify, VerifyFull, VerifyHMAC)
	}
	admin, run, hardware, err := newRun(cfg)
	if err != nil {
		return nil, err
	}

	img, err := firmware.Sample(firmware.SampleOptions{Version: loadVersion, Chip: loadChip, Size: cfg.ReleaseSize})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	m, err := bundle.Build(&b, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt-load", Hardware: hardware, Version: loadVersion,
		Signer: cfg.Signer, FirmwareKey: cfg.FirmwareKey})
	if err != nil {
		return nil, err
	}
	published, err := admin.PublishRollout(ctx, &b, "all")
	if err != nil {
		return nil, fmt.Errorf("load: publish the test release: %w", err)
	}
	ids := make([]string, cfg.Devices)
	if !cfg.Keep {
		// However the run ends (Ctrl-C too: cleanup does not use ctx), its
		// devices and release go.
		defer func() {
			if cerr := cleanup(admin, hardware, published.RolloutID, ids); cerr != nil {
				// Say what is left even when the run failed for another
				// reason first.
				rep, err = nil, errors.Join(err, fmt.Errorf("load: run %s left data on the server (devices load-%s-*, release %s for %s): %w",
					run, run, loadVersion, hardware, cerr))
			}
		}()
	}

	running := "1.0.0"
	if cfg.CheckOnly {
		running = loadVersion
	}
	psks, err := register(ctx, admin, cfg, run, hardware, running, ids)
	if err != nil {
		return nil, err
	}

	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	st := &stats{errors: map[string]int{}}
	// Collect the setup's garbage (the test image and bundle: several times
	// the release size) now rather than during the run, where the collector
	// would take its share of the load's CPU and slow the devices measured.
	img, b = nil, bytes.Buffer{}
	runtime.GC()
	start := time.Now()
	var wg sync.WaitGroup
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				if cfg.OnProgress != nil {
					cfg.OnProgress(Snapshot{Elapsed: time.Since(start), Started: int(st.started.Load()), Done: int(st.done.Load()),
						Fails: int(st.failed.Load()), Chunks: st.chunks.Load()})
				}
			}
		}
	}()
	for i := range cfg.Devices {
		if cfg.Rate > 0 && i > 0 {
			wait := time.Until(start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second))))
			if wait > 0 {
				select {
				case <-runCtx.Done():
				case <-time.After(wait):
				}
			}
		}
		if runCtx.Err() != nil {
			break
		}
		wg.Add(1)
		st.started.Add(1)
		go func() {
			defer wg.Done()
			if cfg.Verify == VerifyHMAC {
				runHMACDevice(runCtx, cfg, st, ids[i], psks[i], hardware)
			} else {
				runDevice(runCtx, cfg, st, ids[i], psks[i], hardware)
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone
	elapsed := time.Since(start)

	rep = &Report{Run: run, Kept: cfg.Keep, API: cfg.API, Devices: cfg.Devices, Completed: int(st.done.Load()), Failed: int(st.failed.Load()),
		ReleaseBytes: m.PlaintextSize, CiphertextBytes: m.CiphertextSize, Elapsed: elapsed, Seconds: elapsed.Seconds(),
		Chunks: st.chunks.Load(), Errors: st.errors}
	rep.ChunksPerSecond = float64(rep.Chunks) / elapsed.Seconds()
	rep.MiBPerSecond = float64(rep.Completed) * float64(m.PlaintextSize) / (1 << 20) / elapsed.Seconds()
	rep.Check, rep.Chunk = summarise(st.check), summarise(st.chunk)
	if n := float64(rep.Completed + rep.Failed); n > 0 {
		rep.WireBytesPerUpdate = float64(st.wire.Load()) / n
		rep.ConnsPerUpdate = float64(st.conns.Load()) / n
	}
	return rep, nil
}

// newRun names a run (its devices are load-RUN-*, its release is for
// hardware load-RUN, which no real device has) and connects to the admin
// API.
func newRun(cfg Config) (admin *client.Admin, run, hardware string, err error) {
	admin, err = client.NewAdmin(cfg.Server, cfg.Token)
	if err != nil {
		return nil, "", "", err
	}
	var idb [4]byte
	rand.Read(idb[:])
	run = hex.EncodeToString(idb[:])
	return admin, run, "load-" + run, nil
}

// register adds the run's devices, a few at a time, filling ids (an id
// stays "" until its device is registered, so cleanup removes only those)
// and returning their keys.
func register(ctx context.Context, admin *client.Admin, cfg Config, run, hardware, running string, ids []string) ([]protocol.PSK, error) {
	psks := make([]protocol.PSK, len(ids))
	var regErr error
	var regMu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id := fmt.Sprintf("load-%s-%05d", run, i)
				d, err := admin.AddDevice(ctx, protocol.AddDevice{ID: id, Hardware: hardware, Version: running, API: cfg.API})
				if err == nil {
					ids[i] = id
					psks[i], err = protocol.ParsePSK(d.PSK)
				}
				if err != nil {
					regMu.Lock()
					regErr = err
					regMu.Unlock()
				}
			}
		}()
	}
	for i := range ids {
		work <- i
	}
	close(work)
	wg.Wait()
	if regErr != nil {
		return nil, fmt.Errorf("load: register devices: %w", regErr)
	}
	return psks, nil
}

// loadVersion is the run's release; its devices start on 1.0.0.
const loadVersion = "2.0.0"

// cleanupTimeout bounds the cleanup, which runs after Ctrl-C too.
const cleanupTimeout = 2 * time.Minute

// cleanup removes a run's devices ("" ids were never registered), a few
// at a time, then deletes its release: their sessions ended with the
// devices, so nothing holds it.
func cleanup(admin *client.Admin, hardware string, rollout int64, ids []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	work := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if _, err := admin.RemoveDevice(ctx, id); err != nil {
					mu.Lock()
					first = cmp.Or(first, fmt.Errorf("load: remove device %s: %w", id, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		if id != "" {
			work <- id
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	// The rollout holds the release; with its devices gone, it ends.
	if _, err := admin.RolloutAction(ctx, rollout, "abort", "load run over"); err != nil {
		return fmt.Errorf("load: abort the test rollout %d: %w", rollout, err)
	}
	if err := admin.DeleteRelease(ctx, hardware, loadVersion); err != nil {
		return fmt.Errorf("load: delete the test release: %w", err)
	}
	return nil
}

func summarise(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	l := Latency{Count: len(ds), P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1]}
	l.P50ms, l.P99ms, l.MaxMs = ms(l.P50), ms(l.P99), ms(l.Max)
	return l
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// loadChip is the chip of the test image and of the load devices: their
// hardware name is the run's, which no ESP32 image can carry, and the
// EcoWatt API checks the chip in the image.
const loadChip = "esp32"

// runDevice takes one device through a whole update.
func runDevice(ctx context.Context, cfg Config, st *stats, id string, psk protocol.PSK, hardware string) {
	tr := newTransport(st, cfg.NoKeepAlive)
	tr.delay = cfg.ChunkDelay
	defer tr.inner.CloseIdleConnections()
	running := "1.0.0"
	if cfg.CheckOnly {
		running = loadVersion
	}
	slots := newMemSlots(running)
	boot, _ := slots.Boot()
	a, err := agent.New(agent.Config{Server: cfg.Server, DeviceID: id, PSK: psk, Hardware: hardware, Chip: loadChip, TrustedKey: cfg.Signer.Public(),
		FirmwareKey: cfg.FirmwareKey, API: cfg.API, HTTPClient: &http.Client{Transport: tr}, ChunksPerRequest: cfg.ChunksPerRequest,
		Retry: agent.RetryPolicy{Attempts: 5, Base: 100 * time.Millisecond, Max: 2 * time.Second},
		OnProgress: func(p agent.Progress) {
			if p.State == agent.StateDownloading && p.Chunk > 0 {
				st.chunks.Add(1)
			}
		}}, slots, boot)
	if err != nil {
		st.fail(err)
		return
	}
	res, err := a.CheckOnce(ctx)
	if cfg.CheckOnly {
		if err != nil {
			st.fail(err)
		} else {
			st.done.Add(1)
		}
		return
	}
	if err == nil && !res.Updated {
		err = fmt.Errorf("no update offered: %s", res.Message)
	}
	if err != nil {
		st.fail(err)
		return
	}
	// Close the session as the device's new image would: confirmed.
	if err := confirm(ctx, cfg, tr, id, psk, res.SessionID); err != nil {
		st.fail(err)
		return
	}
	st.done.Add(1)
}

func confirm(ctx context.Context, cfg Config, tr *transport, id string, psk protocol.PSK, session string) error {
	if cfg.API == agent.APIEcoWatt {
		body := fmt.Sprintf(`{"device_id":%q,"version":%q,"boot_status":"success"}`, id, loadVersion)
		req, _ := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(cfg.Server, "/")+"/ota/complete", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &client.APIError{Status: resp.StatusCode, Message: "confirm refused"}
		}
		return nil
	}
	dev, err := client.NewDevice(cfg.Server, id, psk)
	if err != nil {
		return err
	}
	dev.HTTP = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return dev.Report(ctx, session, "confirmed", "")
}

// runHMACDevice takes one device through an update checking what the
// server vouches for (the manifest signature, every chunk's HMAC, the
// byte count) without decrypting: the server's capacity, not the load
// generator's, is then what limits the run.
func runHMACDevice(ctx context.Context, cfg Config, st *stats, id string, psk protocol.PSK, hardware string) {
	tr := newTransport(st, cfg.NoKeepAlive)
	tr.delay = cfg.ChunkDelay
	defer tr.inner.CloseIdleConnections()
	if err := hmacUpdate(ctx, cfg, st, tr, id, psk, hardware); err != nil {
		st.fail(err)
		return
	}
	st.done.Add(1)
}

func hmacUpdate(ctx context.Context, cfg Config, st *stats, tr *transport, id string, psk protocol.PSK, hardware string) error {
	dev, err := client.NewDevice(cfg.Server, id, psk)
	if err != nil {
		return err
	}
	dev.HTTP = &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	// Retried as the agent retries: a busy server may keep a device
	// waiting to connect.
	var offer *protocol.CheckResponse
	if err := retry(ctx, func() (err error) {
		offer, err = dev.Check(ctx, protocol.CheckRequest{Version: "1.0.0", Hardware: hardware})
		return err
	}); err != nil {
		return err
	}
	if !offer.Update {
		return fmt.Errorf("no update offered: %s", offer.Message)
	}
	manifest, err1 := base64.StdEncoding.DecodeString(offer.Manifest)
	sig, err2 := base64.StdEncoding.DecodeString(offer.Signature)
	if err1 != nil || err2 != nil {
		return errors.New("check answer carries a malformed manifest or signature")
	}
	m, err := (&bundle.Envelope{ManifestBytes: manifest, Signature: sig}).Verify(cfg.Signer.Public())
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	perRequest := cfg.ChunksPerRequest
	if perRequest <= 0 {
		perRequest = agent.DefaultChunksPerRequest
	}
	var got int64
	for next := offer.NextChunk; next < m.Chunks(); {
		err := retry(ctx, func() error {
			return dev.Chunks(ctx, offer.SessionID, protocol.PreferredChunkMAC(offer.ChunkMACs), next, min(perRequest, m.Chunks()-next), m.ChunkSize, func(f protocol.Frame) error {
				got += int64(len(f.Data))
				next++
				st.chunks.Add(1)
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	if want := m.CiphertextSize - int64(offer.NextChunk)*int64(m.ChunkSize); got != want {
		return fmt.Errorf("downloaded %d bytes of ciphertext, the manifest says %d", got, want)
	}
	return retry(ctx, func() error { return dev.Report(ctx, offer.SessionID, "confirmed", "") })
}

// retry runs fn up to five times while it fails for a reason that may
// pass (a connection refused or timed out, a 5xx), waiting 100 ms, then
// twice as long each time, up to 2 s. A chunk stream cut short resumes
// where it stopped: fn picks up its own progress.
func retry(ctx context.Context, fn func() error) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt == 5 || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func transient(err error) bool {
	var ae *client.APIError
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return ae.Temporary()
	case errors.Is(err, client.ErrChunkMAC), errors.Is(err, context.Canceled):
		return false
	case errors.As(err, &ne), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, protocol.ErrFrame):
		return true
	}
	return false
}
