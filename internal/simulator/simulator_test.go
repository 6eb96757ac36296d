package simulator

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/keys"
)

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }

func (l *eventLog) has(kind, version string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Kind == kind && (version == "" || e.Version == version) {
			return true
		}
	}
	return false
}

func (l *eventLog) count(kind string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// newSim makes a device on s; adjust, if given, changes its configuration.
func newSim(t *testing.T, s *testserver.Server, id string, fw keys.FirmwareKey, log *eventLog, adjust ...func(*Config)) (*Device, string) {
	psk := s.AddDevice(id, "1.0.3")
	dir := t.TempDir()
	cfg := Config{
		Agent: agent.Config{Server: s.URL, DeviceID: id, PSK: psk, Hardware: "esp32", TrustedKey: s.Signer.Public(), FirmwareKey: fw,
			CheckInterval: 50 * time.Millisecond, Retry: agent.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}},
		StateDir: dir, FactoryVersion: "1.0.3", PollInterval: 10 * time.Millisecond, UploadInterval: 40 * time.Millisecond,
		OnEvent: log.add,
	}
	for _, f := range adjust {
		f(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, dir
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func uploadedFirmware(t *testing.T, dir string) map[string]int {
	f, err := os.Open(filepath.Join(dir, "uploads.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var batch struct {
			Firmware string    `json:"firmware"`
			Readings []Reading `json:"readings"`
		}
		if err := json.Unmarshal(sc.Bytes(), &batch); err != nil {
			t.Fatalf("upload batch: %v", err)
		}
		seen[batch.Firmware] += len(batch.Readings)
		for _, r := range batch.Readings {
			if r.Voltage < 200 || r.Voltage > 260 || r.Power < 0 {
				t.Fatalf("implausible reading %+v", r)
			}
		}
	}
	return seen
}

// The device keeps working around an update: it pauses collection while the
// update downloads and installs, resumes after, and uploads readings from
// both firmware versions.
func TestDeviceWorksAroundAnUpdate(t *testing.T) {
	s := testserver.New(t)
	log := &eventLog{}
	d, dir := newSim(t, s, "sim1", s.FWKey, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "first boot", func() bool { return d.Running() == "1.0.3" })
	time.Sleep(200 * time.Millisecond) // some normal work first
	s.PublishSample("1.0.4", firmware.Healthy, 256<<10)
	waitFor(t, "update to 1.0.4", func() bool { return log.has("confirmed", "1.0.4") })
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if log.count("paused") != 1 || log.count("resumed") != 1 {
		t.Fatalf("%d pauses and %d resumes, want 1 each", log.count("paused"), log.count("resumed"))
	}
	if d.LongestPause() <= 0 || d.LongestPause() > 10*time.Second {
		t.Fatalf("longest pause %v", d.LongestPause())
	}
	if gap := d.MaxPollGap(); gap > 500*time.Millisecond {
		t.Fatalf("polling stopped for %v outside the update", gap)
	}
	seen := uploadedFirmware(t, dir)
	if seen["1.0.3"] == 0 || seen["1.0.4"] == 0 {
		t.Fatalf("readings uploaded per firmware: %v", seen)
	}
	if d.Boots() != 2 {
		t.Fatalf("%d boots, want 2 (factory, new image)", d.Boots())
	}
}

// A failed update (the device holds another firmware key, so the image
// does not decrypt to what was signed) still resumes the device's work,
// and the device keeps running its image.
func TestDeviceResumesWorkAfterFailedUpdate(t *testing.T) {
	s := testserver.New(t)
	var otherKey keys.FirmwareKey
	rand.Read(otherKey[:])
	log := &eventLog{}
	d, _ := newSim(t, s, "sim2", otherKey, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "first boot", func() bool { return d.Running() == "1.0.3" })
	s.PublishSample("1.0.4", firmware.Healthy, 64<<10)
	waitFor(t, "the failure", func() bool { return log.count("resumed") > 0 })
	time.Sleep(150 * time.Millisecond)
	cancel()
	<-done
	if d.Running() != "1.0.3" {
		t.Fatalf("running %s", d.Running())
	}
	if log.count("paused") != log.count("resumed") {
		t.Fatalf("%d pauses but %d resumes", log.count("paused"), log.count("resumed"))
	}
	if evs := strings.Join(s.Events("sim2"), ", "); !strings.Contains(evs, "failed 1.0.4") {
		t.Fatalf("failure not reported: %s", evs)
	}
	if gap := d.MaxPollGap(); gap > 500*time.Millisecond {
		t.Fatalf("polling stopped for %v outside update attempts", gap)
	}
}

// progressAt returns when the device first reported progress state st,
// and the progress.
func (l *eventLog) progressAt(st agent.State) (time.Time, *agent.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Progress != nil && e.Progress.State == st {
			return e.Time, e.Progress
		}
	}
	return time.Time{}, nil
}

// An update offered with an install window that opens in two seconds is
// downloaded at once and installed when the window opens: the device's
// timer checks again then, though its check interval is an hour, and does
// not download it again. The server does not send windows yet; a Tap adds
// one to its offers.
func TestDeviceInstallsWhenTheWindowOpens(t *testing.T) {
	s := testserver.New(t)
	tap := s.Tap()
	log := &eventLog{}
	d, _ := newSim(t, s, "sim4", s.FWKey, log, func(c *Config) {
		c.Agent.Server = tap.URL
		c.Agent.CheckInterval = time.Hour
	})
	s.PublishSample("1.0.4", firmware.Healthy, 64<<10)
	opens := time.Now().Add(2 * time.Second)
	tap.SetWindow(opens, time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the install deferred", func() bool { at, _ := log.progressAt(agent.StateDeferred); return !at.IsZero() })
	chunks := tap.ChunkRequests()
	waitFor(t, "update to 1.0.4", func() bool { return log.has("confirmed", "1.0.4") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, deferred := log.progressAt(agent.StateDeferred)
	if deferred.Deferred == nil || !deferred.Deferred.Until.Equal(opens) {
		t.Fatalf("deferred %+v, want until %v", deferred.Deferred, opens)
	}
	if applied, _ := log.progressAt(agent.StateApplying); applied.Before(opens) {
		t.Fatalf("installed at %v, before the window opened at %v", applied, opens)
	}
	if n := tap.ChunkRequests(); n != chunks {
		t.Fatalf("%d chunk requests, %d of them after the download was verified", n, n-chunks)
	}
	checks, err := tap.Checks()
	if err != nil || len(checks) == 0 || checks[0].Inventory == nil || checks[0].Inventory.Chip != "esp32" || checks[0].Inventory.SlotSize != DefaultSlotSize {
		t.Fatalf("check-ins %+v (%v), want the simulated chip and slot size in the inventory", checks, err)
	}
}

// The server disappears for good in the middle of a download: the agent
// gives up within its update deadline, the device keeps its image, and data
// collection resumes, never paused longer than that deadline.
func TestServerGoneMidDownload(t *testing.T) {
	s := testserver.New(t)
	log := &eventLog{}
	psk := s.AddDevice("sim3", "1.0.3")
	var mu sync.Mutex
	progressed := false
	d, err := New(Config{
		Agent: agent.Config{Server: s.URL, DeviceID: "sim3", PSK: psk, Hardware: "esp32", TrustedKey: s.Signer.Public(), FirmwareKey: s.FWKey,
			CheckInterval: 50 * time.Millisecond, UpdateTimeout: 2 * time.Second, RequestTimeout: 200 * time.Millisecond,
			ChunksPerRequest: 1, Retry: agent.RetryPolicy{Attempts: 4, Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}},
		StateDir: t.TempDir(), FactoryVersion: "1.0.3", PollInterval: 10 * time.Millisecond, UploadInterval: 40 * time.Millisecond,
		OnEvent: func(e Event) {
			log.add(e)
			if e.Progress != nil && e.Progress.State == agent.StateDownloading && e.Progress.Percent > 10 {
				mu.Lock()
				progressed = true
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "first boot", func() bool { return d.Running() == "1.0.3" })
	s.PublishSample("1.0.4", firmware.Healthy, 1<<20)
	waitFor(t, "download under way", func() bool { mu.Lock(); defer mu.Unlock(); return progressed })
	s.HTTP.CloseClientConnections()
	s.HTTP.Close() // gone for good
	waitFor(t, "the agent to give up", func() bool { return log.count("resumed") > 0 })
	time.Sleep(300 * time.Millisecond) // later checks fail quietly; work goes on
	cancel()
	<-done
	if d.Running() != "1.0.3" {
		t.Fatalf("running %s", d.Running())
	}
	if p := d.LongestPause(); p > 2500*time.Millisecond {
		t.Fatalf("data collection paused for %v, the update deadline is 2s", p)
	}
	if gap := d.MaxPollGap(); gap > 500*time.Millisecond {
		t.Fatalf("polling stopped for %v outside the update", gap)
	}
	t.Logf("longest pause %v, longest gap between polls outside it %v", d.LongestPause().Round(time.Millisecond), d.MaxPollGap().Round(time.Millisecond))
}

// A device whose two boot-state copies are damaged formats itself from its
// factory image (security counter 0) and must keep the counter 7 of the
// image it had confirmed.
func TestFormatFromFactoryKeepsSecurityCounter(t *testing.T) {
	dir := t.TempDir()
	d, err := New(Config{Agent: agent.Config{Hardware: "esp32"}, StateDir: dir, FactoryVersion: "1.0.3", SlotSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.disk.Close() })
	if err := d.format(); err != nil {
		t.Fatal(err)
	}
	boot := func() *slotfile.Slots {
		t.Helper()
		s, err := slotfile.Open(d.disk, d.cfg.SlotSize, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Boot(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := boot()
	fw, err := firmware.Sample(firmware.SampleOptions{Version: "1.0.4", SecureVersion: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Erase(1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(1, fw, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPending(1, agent.Image{Version: "1.0.4", SecurityCounter: 7, Size: int64(len(fw)), SHA256: sha256.Sum256(fw)}); err != nil {
		t.Fatal(err)
	}
	if err := boot().Confirm(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if err := os.WriteFile(filepath.Join(dir, "flash", fmt.Sprintf("otadata.%d", i)), []byte("worn-out flash"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.format(); err != nil {
		t.Fatalf("format from factory: %v", err)
	}
	s = boot()
	st, _ := s.Status()
	c, err := s.SecurityCounter()
	if st.Slots[st.Running].Image.Version != "1.0.3" || err != nil || c != 7 {
		t.Fatalf("after the format: running %s, security counter %d (%v); want 1.0.3 and 7", st.Slots[st.Running].Image.Version, c, err)
	}
}
