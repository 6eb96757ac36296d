package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/protocol"
)

// A push run measures MQTT fan-out: every device connects to the broker
// and subscribes to its topic, then a release is published with a rollout
// to all of them at once, and each device, woken by its notification,
// checks in over the native API (honouring the notification's spread, as
// the agent does). It reports how long until every device had checked in.
// Devices check in on a fresh connection each, as a device on a timer
// does, and download nothing: the measure is the wake-up, not the update
// (the other runs measure updates).

// PushConfig describes a push run.
type PushConfig struct {
	Config
	// MQTT is the broker devices connect to: mqtt://host:port or
	// mqtts://host:port.
	MQTT string
	// RootCAs verify an mqtts broker (nil: the system's).
	RootCAs *x509.CertPool
	// ConnectRate is MQTT connections opened per second
	// (DefaultPushConnectRate when 0): a fleet comes online over time, and
	// ten thousand connections in one instant overflow a listen backlog.
	ConnectRate float64
	// Wait bounds how long after the publish devices are waited for
	// (default 2 minutes).
	Wait time.Duration
	// AfterRegister, if set, runs once the devices are registered and
	// before they connect: an external broker's password file needs them
	// (fota mqtt acl, then a reload of the broker).
	AfterRegister func(ids []string) error
	// OnPhase, if set, hears when a phase begins: "connecting",
	// "publishing".
	OnPhase func(phase string)
}

// DefaultPushConnectRate is PushConfig.ConnectRate's default.
const DefaultPushConnectRate = 2000

// PushReport is the result of a push run.
type PushReport struct {
	Run        string  `json:"run"`
	Devices    int     `json:"devices"`
	Subscribed int     `json:"subscribed"`
	ConnectS   float64 `json:"connect_seconds"` // until every device had subscribed
	Notified   int     `json:"notified"`
	CheckedIn  int     `json:"checked_in"`
	Offered    int     `json:"offered"` // check-ins answered with the update
	SpreadMS   int64   `json:"spread_ms"`
	// Times from the publish request to each device's check-in answer.
	FirstS   float64        `json:"first_seconds"`
	P50S     float64        `json:"p50_seconds"`
	P90S     float64        `json:"p90_seconds"`
	P99S     float64        `json:"p99_seconds"`
	AllS     float64        `json:"all_seconds"` // 0 unless every device checked in
	Within5s int            `json:"within_5s"`
	Check    Latency        `json:"check_latency"` // the check-in requests alone
	Errors   map[string]int `json:"errors"`
}

// RunPush runs a push fan-out measure.
func RunPush(ctx context.Context, cfg PushConfig) (rep *PushReport, err error) {
	if cfg.Devices < 1 {
		return nil, errors.New("load: at least one device")
	}
	broker, err := url.Parse(cfg.MQTT)
	if err != nil || (broker.Scheme != "mqtt" && broker.Scheme != "mqtts") || broker.Host == "" {
		return nil, fmt.Errorf("load: --mqtt %q: want mqtt://host:port or mqtts://host:port", cfg.MQTT)
	}
	if cfg.ConnectRate <= 0 {
		cfg.ConnectRate = DefaultPushConnectRate
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 2 * time.Minute
	}
	admin, run, hardware, err := newRun(cfg.Config)
	if err != nil {
		return nil, err
	}
	img, err := firmware.Sample(firmware.SampleOptions{Version: loadVersion, Chip: loadChip, Size: max(cfg.ReleaseSize, 4096)})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := bundle.Build(&b, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt-load", Hardware: hardware, Version: loadVersion,
		Signer: cfg.Signer, FirmwareKey: cfg.FirmwareKey}); err != nil {
		return nil, err
	}
	ids := make([]string, cfg.Devices)
	rolloutID := int64(-1)
	if !cfg.Keep {
		defer func() {
			if rolloutID < 0 {
				err = errors.Join(err, cleanupDevices(admin, ids))
				return
			}
			if cerr := cleanup(admin, hardware, rolloutID, ids); cerr != nil {
				rep, err = nil, errors.Join(err, fmt.Errorf("load: run %s left data on the server (devices load-%s-*, release %s for %s): %w",
					run, run, loadVersion, hardware, cerr))
			}
		}()
	}
	psks, err := register(ctx, admin, cfg.Config, run, hardware, "1.0.0", ids)
	if err != nil {
		return nil, err
	}
	if cfg.AfterRegister != nil {
		if err := cfg.AfterRegister(ids); err != nil {
			return nil, fmt.Errorf("load: after registering the devices: %w", err)
		}
	}

	st := &stats{errors: map[string]int{}}
	p := &pushRun{cfg: cfg, broker: broker, st: st, hardware: hardware, woken: make([]time.Duration, cfg.Devices)}
	for i := range p.woken {
		p.woken[i] = -1
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Connect the fleet at ConnectRate, waiting for each SUBACK.
	phase := func(p string) {
		if cfg.OnPhase != nil {
			cfg.OnPhase(p)
		}
	}
	phase("connecting")
	connectStart := time.Now()
	var subscribed sync.WaitGroup
	var wg sync.WaitGroup
	for i := range cfg.Devices {
		wait := time.Until(connectStart.Add(time.Duration(float64(i) / cfg.ConnectRate * float64(time.Second))))
		if wait > 0 {
			select {
			case <-runCtx.Done():
				return nil, runCtx.Err()
			case <-time.After(wait):
			}
		}
		subscribed.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.device(runCtx, i, ids[i], psks[i], subscribed.Done)
		}()
	}
	subscribed.Wait()
	connectTime := time.Since(connectStart)
	if n := p.subscribed.Load(); n < int64(cfg.Devices) {
		cancel()
		wg.Wait()
		return nil, fmt.Errorf("load: only %d of %d devices subscribed to their MQTT topic; errors by kind: %s", n, cfg.Devices, firstErrors(st))
	}
	img = nil // keep nothing large alive during the measure
	runtime.GC()

	// Publish with a rollout to all: the server notifies every device.
	phase("publishing")
	p.start = time.Now()
	p.started.Store(true)
	published, err := admin.PublishRollout(ctx, &b, "all")
	if err != nil {
		cancel()
		wg.Wait()
		return nil, fmt.Errorf("load: publish the test release: %w", err)
	}
	rolloutID = published.RolloutID
	deadline := time.NewTimer(cfg.Wait)
	defer deadline.Stop()
	select {
	case <-p.allDone(cfg.Devices):
	case <-deadline.C:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()

	rep = &PushReport{Run: run, Devices: cfg.Devices, Subscribed: int(p.subscribed.Load()), ConnectS: connectTime.Seconds(),
		Notified: int(p.notified.Load()), Offered: int(p.offered.Load()), SpreadMS: p.spread.Load(), Errors: st.errors,
		Check: summarise(st.check)}
	var times []time.Duration
	for _, d := range p.woken {
		if d >= 0 {
			times = append(times, d)
		}
	}
	slices.Sort(times)
	rep.CheckedIn = len(times)
	if len(times) > 0 {
		at := func(q float64) float64 { return times[min(len(times)-1, int(q*float64(len(times))))].Seconds() }
		rep.FirstS, rep.P50S, rep.P90S, rep.P99S = times[0].Seconds(), at(0.5), at(0.9), at(0.99)
		if len(times) == cfg.Devices {
			rep.AllS = times[len(times)-1].Seconds()
		}
		for _, d := range times {
			if d <= 5*time.Second {
				rep.Within5s++
			}
		}
	}
	return rep, nil
}

// pushRun is what a push run's devices share.
type pushRun struct {
	cfg        PushConfig
	broker     *url.URL
	st         *stats
	hardware   string
	start      time.Time
	started    atomic.Bool
	subscribed atomic.Int64
	notified   atomic.Int64
	offered    atomic.Int64
	spread     atomic.Int64
	mu         sync.Mutex
	woken      []time.Duration // by device: publish to check-in answer; -1 if none
	checkedIn  int
	done       chan struct{}
	doneOnce   sync.Once
}

func (p *pushRun) allDone(n int) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		p.done = make(chan struct{})
		if p.checkedIn >= n {
			close(p.done)
		}
	}
	return p.done
}

func (p *pushRun) checked(i int, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.woken[i] >= 0 {
		return
	}
	p.woken[i] = d
	p.checkedIn++
	if p.checkedIn == len(p.woken) && p.done != nil {
		p.doneOnce.Do(func() { close(p.done) })
	}
}

// device is one simulated device: an MQTT subscription, and a check-in
// when notified.
func (p *pushRun) device(ctx context.Context, i int, id string, psk protocol.PSK, subscribed func()) {
	conn, err := p.subscribe(ctx, id, psk)
	subscribed()
	if err != nil {
		p.st.fail(fmt.Errorf("mqtt: %w", err))
		return
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	p.subscribed.Add(1)
	r := bufio.NewReaderSize(conn, 512)
	for {
		typ, body, err := readPacket(r)
		if err != nil {
			if ctx.Err() == nil {
				p.st.fail(fmt.Errorf("mqtt: %w", err))
			}
			return
		}
		if typ>>4 != 3 { // not a PUBLISH
			continue
		}
		payload, ackID, err := parsePublish(typ, body)
		if err != nil {
			p.st.fail(fmt.Errorf("mqtt: %w", err))
			return
		}
		if ackID > 0 {
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			conn.Write([]byte{0x40, 2, byte(ackID >> 8), byte(ackID)})
		}
		if !p.started.Load() {
			continue // not the run's notification
		}
		n, err := protocol.ParseNotification(payload)
		if err != nil {
			p.st.fail(err)
			continue
		}
		p.notified.Add(1)
		p.spread.Store(n.SpreadMS)
		// As the agent: a random moment within the spread.
		if spread := n.Spread(); spread > 0 {
			wait, _ := rand.Int(rand.Reader, big.NewInt(int64(spread)))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(wait.Int64())):
			}
		}
		p.check(ctx, i, id, psk)
		return
	}
}

func (p *pushRun) check(ctx context.Context, i int, id string, psk protocol.PSK) {
	tr := newTransport(p.st, true)
	defer tr.inner.CloseIdleConnections()
	dev, err := client.NewDevice(p.cfg.Server, id, psk)
	if err != nil {
		p.st.fail(err)
		return
	}
	dev.HTTP = &http.Client{Transport: tr, Timeout: time.Minute}
	var offer *protocol.CheckResponse
	if err := retry(ctx, func() (err error) {
		offer, err = dev.Check(ctx, protocol.CheckRequest{Version: "1.0.0", Hardware: p.hardware})
		return err
	}); err != nil {
		if ctx.Err() == nil {
			p.st.fail(err)
		}
		return
	}
	p.checked(i, time.Since(p.start))
	if offer.Update {
		p.offered.Add(1)
	}
}

// subscribe connects to the broker as the device (MQTT 3.1.1, clean
// session) and subscribes to its topic, QoS 1.
func (p *pushRun) subscribe(ctx context.Context, id string, psk protocol.PSK) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	var err error
	if p.broker.Scheme == "mqtts" {
		conn, err = (&tls.Dialer{NetDialer: d, Config: &tls.Config{RootCAs: p.cfg.RootCAs, ServerName: p.broker.Hostname()}}).DialContext(ctx, "tcp", p.broker.Host)
	} else {
		conn, err = d.DialContext(ctx, "tcp", p.broker.Host)
	}
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(connectPacket(id, protocol.MQTTPassword(psk, id), 600)); err != nil {
		conn.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(conn, 64)
	typ, body, err := readPacket(r)
	if err != nil || typ != 0x20 || len(body) != 2 || body[1] != 0 {
		conn.Close()
		switch {
		case err != nil:
			return nil, fmt.Errorf("no answer to the login: %w", err)
		case typ == 0x20 && len(body) == 2 && (body[1] == 4 || body[1] == 5):
			return nil, errors.New("the broker refused the login: not authorized (does it know the load's devices? an external broker needs fota mqtt acl run after they are registered)")
		case typ == 0x20 && len(body) == 2:
			return nil, fmt.Errorf("the broker refused the login with CONNACK code %d", body[1])
		}
		return nil, fmt.Errorf("the broker answered the login with packet type %#x, not a CONNACK", typ)
	}
	topic := protocol.NotifyTopic(id)
	sub := []byte{0, 1, byte(len(topic) >> 8), byte(len(topic))}
	sub = append(append(sub, topic...), 1)
	if _, err := conn.Write(append(packetHeader(0x82, len(sub)), sub...)); err != nil {
		conn.Close()
		return nil, err
	}
	typ, body, err = readPacket(r)
	if err != nil || typ != 0x90 || len(body) != 3 || body[2] > 2 {
		conn.Close()
		return nil, fmt.Errorf("subscription refused (packet %#x %x, %v)", typ, body, err)
	}
	conn.SetDeadline(time.Time{})
	if r.Buffered() > 0 {
		conn.Close()
		return nil, errors.New("broker sent more than the SUBACK")
	}
	return conn, nil
}

// connectPacket is an MQTT 3.1.1 CONNECT with user name and password,
// clean session.
func connectPacket(id, password string, keepAlive uint16) []byte {
	str := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	v := str(nil, "MQTT")
	v = append(v, 4, 0xc2)
	v = binary.BigEndian.AppendUint16(v, keepAlive)
	v = str(str(str(v, id), id), password)
	return append(packetHeader(0x10, len(v)), v...)
}

func packetHeader(typ byte, n int) []byte {
	b := []byte{typ}
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return 0, nil, errors.New("malformed packet length")
		}
	}
	if n > 4096 {
		return 0, nil, fmt.Errorf("packet of %d bytes: more than a notification", n)
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// parsePublish returns a PUBLISH's payload and, for QoS 1, its packet id.
func parsePublish(typ byte, body []byte) ([]byte, uint16, error) {
	if len(body) < 2 {
		return nil, 0, errors.New("short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < tl {
		return nil, 0, errors.New("short PUBLISH topic")
	}
	rest = rest[tl:]
	var id uint16
	if (typ>>1)&3 > 0 {
		if len(rest) < 2 {
			return nil, 0, errors.New("short PUBLISH packet id")
		}
		id, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	return rest, id, nil
}

// cleanupDevices removes a run's devices when no release was published.
func cleanupDevices(admin *client.Admin, ids []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := admin.RemoveDevice(ctx, id); err != nil {
			return fmt.Errorf("load: remove device %s: %w", id, err)
		}
	}
	return nil
}

func firstErrors(st *stats) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.errors) == 0 {
		return "none recorded"
	}
	var parts []string
	for kind, n := range st.errors {
		parts = append(parts, fmt.Sprintf("%d × %s", n, kind))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
