// Package simulator runs a simulated EcoWatt device: an ESP32 whose flash
// is a folder (agent/slotfile), whose firmware is the image in its booted
// slot, and whose normal work is polling an inverter and uploading the
// readings. It runs the fota agent on a timer, pauses its work while an
// update downloads and installs, and reboots into new images, confirming
// or rolling them back according to how the image behaves.
package simulator

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/internal/firmware"
)

// DefaultSlotSize is the simulated OTA partition size: 4 MiB, a common
// ESP32 layout with 16 MB flash.
const DefaultSlotSize = 4 << 20

// Config describes a simulated device.
type Config struct {
	Agent          agent.Config // server, identity, keys, API, intervals
	StateDir       string       // its flash, counters and logs
	FactoryVersion string       // image written to slot 0 when StateDir is empty
	// FactoryImage is that image; nil for a small sample image of
	// FactoryVersion.
	FactoryImage   []byte
	SlotSize       int64
	MaxBoots       int           // trial boots before rollback; slotfile.DefaultMaxBoots
	PollInterval   time.Duration // inverter polling; default 5s
	UploadInterval time.Duration // batch uploads; default 30s
	// WrapDisk lets tests put a FaultDisk under the slots.
	WrapDisk func(slotfile.Disk) slotfile.Disk
	// OnEvent receives a line for each thing the device does.
	OnEvent func(Event)
	Logger  *slog.Logger
}

// Event is something the device did, for displays and tests.
type Event struct {
	Time     time.Time
	Kind     string // boot, confirmed, self-test-failed, crashed, rolled-back, progress, update-installed, error, paused, resumed
	Version  string // running version
	Detail   string
	Progress *agent.Progress
}

// Reading is one inverter sample.
type Reading struct {
	Time    time.Time `json:"time"`
	Voltage float64   `json:"voltage_v"`
	Current float64   `json:"current_a"`
	Power   float64   `json:"power_w"`
	Energy  float64   `json:"energy_wh"`
}

// ringSize bounds the readings kept between uploads.
const ringSize = 256

// Device is a simulated EcoWatt device.
type Device struct {
	cfg  Config
	disk *slotfile.OSDisk

	mu       sync.Mutex
	running  string
	ring     []Reading
	dropped  int
	energy   float64
	paused   bool
	pausedAt time.Time
	longest  time.Duration // longest pause of data collection
	lastPoll time.Time
	maxGap   time.Duration // longest time between two polls while not paused
	boots    int
	agent    *agent.Agent
}

// New makes a device; nothing runs until Run.
func New(cfg Config) (*Device, error) {
	if cfg.SlotSize <= 0 {
		cfg.SlotSize = DefaultSlotSize
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 5 * time.Second
	}
	if cfg.UploadInterval <= 0 {
		cfg.UploadInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Agent.Chip == "" {
		// Its factory image is built for the chip its hardware name says.
		cfg.Agent.Chip = cfg.Agent.Hardware
	}
	disk, err := slotfile.NewOSDisk(filepath.Join(cfg.StateDir, "flash"))
	if err != nil {
		return nil, err
	}
	return &Device{cfg: cfg, disk: disk}, nil
}

func (d *Device) emit(kind, detail string, p *agent.Progress) {
	d.mu.Lock()
	v := d.running
	d.mu.Unlock()
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(Event{Time: time.Now(), Kind: kind, Version: v, Detail: detail, Progress: p})
	}
}

// Running returns the version the device runs.
func (d *Device) Running() string { d.mu.Lock(); defer d.mu.Unlock(); return d.running }

// LongestPause is the longest time data collection was paused for an update.
func (d *Device) LongestPause() time.Duration { d.mu.Lock(); defer d.mu.Unlock(); return d.longest }

// Boots counts power-ups and reboots.
func (d *Device) Boots() int { d.mu.Lock(); defer d.mu.Unlock(); return d.boots }

// Agent returns the agent of the current boot (nil before the first).
func (d *Device) Agent() *agent.Agent { d.mu.Lock(); defer d.mu.Unlock(); return d.agent }

func (d *Device) diskForSlots() slotfile.Disk {
	if d.cfg.WrapDisk != nil {
		return d.cfg.WrapDisk(d.disk)
	}
	return d.disk
}

// format writes the factory image into a device whose flash holds no
// readable boot state: an empty one, or one whose two boot-state copies
// are both damaged. The security counter is not boot state: slotfile.Format
// keeps it, so the device refuses what it had locked out before.
func (d *Device) format() error {
	if slotfile.Formatted(d.disk) {
		return nil
	}
	if d.cfg.FactoryVersion == "" {
		return errors.New("device flash is empty and no factory version is given")
	}
	img := d.cfg.FactoryImage
	if img == nil {
		var err error
		if img, err = firmware.Sample(firmware.SampleOptions{Version: d.cfg.FactoryVersion, Chip: d.cfg.Agent.Hardware}); err != nil {
			return fmt.Errorf("factory image: %w", err)
		}
	}
	info := agent.Image{Version: d.cfg.FactoryVersion, Size: int64(len(img)), SHA256: sha256.Sum256(img)}
	return slotfile.Format(d.disk, d.cfg.SlotSize, img, info)
}

// errReboot ends one boot's run so the device boots again.
var errReboot = errors.New("reboot")

// Run powers the device on and keeps it running, rebooting as updates and
// self-tests require, until ctx ends.
func (d *Device) Run(ctx context.Context) error {
	defer d.disk.Close()
	if err := d.format(); err != nil {
		return err
	}
	for {
		err := d.bootOnce(ctx)
		if errors.Is(err, errReboot) {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// bootOnce is one power-up: boot step, self-test, agent, normal work.
func (d *Device) bootOnce(ctx context.Context) error {
	slots, err := slotfile.Open(d.diskForSlots(), d.cfg.SlotSize, d.cfg.MaxBoots)
	if err != nil {
		return err
	}
	bi, err := slots.Boot()
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	d.mu.Lock()
	d.running = bi.Image.Version
	d.boots++
	d.mu.Unlock()
	mode := "normal"
	if bi.Trial {
		mode = fmt.Sprintf("trial boot %d", bi.Attempts)
	}
	d.emit("boot", fmt.Sprintf("slot %d, %s", bi.Slot, mode), nil)

	cfg := d.cfg.Agent
	cfg.PauseWork, cfg.ResumeWork = d.pause, d.resume
	cfg.OnProgress = func(p agent.Progress) { d.emit("progress", string(p.State), &p) }
	a, err := agent.New(cfg, slots, bi)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.agent = a
	d.mu.Unlock()
	if bi.Rollback != nil {
		d.emit("rolled-back", fmt.Sprintf("%s: %s", bi.Rollback.Version, bi.Rollback.Reason), nil)
	}
	if err := a.Startup(ctx); err != nil {
		return err
	}

	if bi.Trial {
		if err := d.selfTest(ctx, a, slots, bi); err != nil {
			return err
		}
	}

	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.pollLoop(wctx) }()
	go func() { defer wg.Done(); d.uploadLoop(wctx) }()
	rebooting := false
	err = a.Run(ctx, func() { rebooting = true })
	stopWork()
	wg.Wait()
	d.flushUploads()
	if rebooting {
		d.emit("update-installed", "rebooting into the new image", nil)
		return errReboot
	}
	return err
}

// selfTest runs the booted image's self-test as the image would.
func (d *Device) selfTest(ctx context.Context, a *agent.Agent, slots agent.Slots, bi agent.BootInfo) error {
	img := make([]byte, bi.Image.Size)
	if _, err := slots.ReadAt(bi.Slot, img, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read running image: %w", err)
	}
	behaviour, err := firmware.BehaviourOf(img)
	if err != nil {
		// Real firmware without the simulator's marker: it runs and passes.
		if _, perr := esp32.Parse(img); perr != nil {
			behaviour = firmware.FailSelfTest
		} else {
			behaviour = firmware.Healthy
		}
	}
	switch behaviour {
	case firmware.Healthy:
		if err := a.Confirm(ctx); err != nil {
			return err
		}
		d.emit("confirmed", "self-test passed", nil)
		return nil
	case firmware.Crash:
		d.emit("crashed", "image reset before confirming itself", nil)
		return errReboot
	default:
		if err := a.Reject("self-test failed"); err != nil {
			return err
		}
		d.emit("self-test-failed", "rolling back", nil)
		return errReboot
	}
}

func (d *Device) pause() {
	d.mu.Lock()
	d.paused, d.pausedAt = true, time.Now()
	d.mu.Unlock()
	d.emit("paused", "data collection paused for the update", nil)
}

func (d *Device) resume() {
	d.mu.Lock()
	d.paused = false
	if p := time.Since(d.pausedAt); p > d.longest {
		d.longest = p
	}
	d.lastPoll = time.Now() // the pause is not a gap
	d.mu.Unlock()
	d.emit("resumed", "data collection resumed", nil)
}

// pollLoop reads the simulated inverter's registers into the ring buffer.
func (d *Device) pollLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.mu.Lock()
			if !d.paused {
				if !d.lastPoll.IsZero() {
					d.maxGap = max(d.maxGap, now.Sub(d.lastPoll))
				}
				d.lastPoll = now
				d.ring = append(d.ring, d.read(now))
				if len(d.ring) > ringSize {
					d.dropped += len(d.ring) - ringSize
					d.ring = d.ring[len(d.ring)-ringSize:]
				}
			}
			d.mu.Unlock()
		}
	}
}

// read simulates the inverter: a solar day curve with noise. Called locked.
func (d *Device) read(now time.Time) Reading {
	hour := float64(now.Hour()) + float64(now.Minute())/60
	sun := math.Max(0, math.Sin((hour-6)/12*math.Pi))
	v := 230 + rand.NormFloat64()*1.5
	p := 3000*sun + rand.Float64()*20
	d.energy += p * d.cfg.PollInterval.Hours()
	return Reading{Time: now, Voltage: v, Current: p / v, Power: p, Energy: d.energy}
}

func (d *Device) uploadLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.UploadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.mu.Lock()
			paused := d.paused
			d.mu.Unlock()
			if !paused {
				d.flushUploads()
			}
		}
	}
}

// flushUploads "uploads" the buffered readings: appends them as one batch
// to uploads.jsonl in the state folder.
func (d *Device) flushUploads() {
	d.mu.Lock()
	batch := d.ring
	d.ring = nil
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	f, err := os.OpenFile(filepath.Join(d.cfg.StateDir, "uploads.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		d.cfg.Logger.Warn("upload failed", "error", err)
		return
	}
	defer f.Close()
	line, _ := json.Marshal(map[string]any{"device_id": d.cfg.Agent.DeviceID, "firmware": d.Running(), "readings": batch})
	f.Write(append(line, '\n'))
}

// MaxPollGap is the longest time between two inverter polls outside an
// update pause.
func (d *Device) MaxPollGap() time.Duration { d.mu.Lock(); defer d.mu.Unlock(); return d.maxGap }
