package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// mitm sits between the device and the real server and rewrites answers,
// as a compromised server or network would.
type mitm struct {
	proxy *httputil.ReverseProxy
	// check, when set, produces the check answer (a JSON object) itself.
	check func(orig []byte) []byte
	// chunks rewrites a native chunks answer.
	chunks func(req *http.Request, body []byte) []byte
	delay  time.Duration // before every chunks answer
}

func newMITM(t *testing.T, target string) (*mitm, string) {
	u, _ := url.Parse(target)
	m := &mitm{proxy: httputil.NewSingleHostReverseProxy(u)}
	m.proxy.ModifyResponse = func(resp *http.Response) error {
		path := resp.Request.URL.Path
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		switch {
		case path == "/v1/device/check" && m.check != nil:
			body = m.check(body)
		case strings.HasSuffix(path, "/chunks") && resp.StatusCode == 200:
			if m.delay > 0 {
				time.Sleep(m.delay)
			}
			if m.chunks != nil {
				body = m.chunks(resp.Request, body)
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(m.proxy)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// frames splits a chunks answer.
type frame struct {
	index int
	mac   []byte
	data  []byte
}

func splitFrames(body []byte) []frame {
	var out []frame
	for len(body) >= protocol.FrameHeaderSize {
		n := int(binary.BigEndian.Uint32(body[4:8]))
		if len(body) < protocol.FrameHeaderSize+n {
			break
		}
		out = append(out, frame{index: int(binary.BigEndian.Uint32(body[0:4])), mac: body[8:40], data: body[40 : 40+n]})
		body = body[40+n:]
	}
	return out
}

func joinFrames(fs []frame) []byte {
	var out []byte
	for _, f := range fs {
		var mac [32]byte
		copy(mac[:], f.mac)
		out = protocol.AppendFrameHeader(out, f.index, len(f.data), &mac)
		out = append(out, f.data...)
	}
	return out
}

// editCheck applies edit to the decoded check answer.
func editCheck(edit func(m map[string]any)) func([]byte) []byte {
	return func(orig []byte) []byte {
		var m map[string]any
		json.Unmarshal(orig, &m)
		if m["update"] != true {
			return orig
		}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
}

// editManifest changes the signed manifest's JSON text, keeping the signature.
func editManifest(re, repl string) func([]byte) []byte {
	return editCheck(func(m map[string]any) {
		raw, _ := base64.StdEncoding.DecodeString(m["manifest"].(string))
		raw = regexp.MustCompile(re).ReplaceAll(raw, []byte(repl))
		m["manifest"] = base64.StdEncoding.EncodeToString(raw)
	})
}

// flipManifestField changes the first hex digit of a manifest field to a
// different one: a fixed replacement would be no change at all whenever
// the random value already started with it.
func flipManifestField(field string) func([]byte) []byte {
	return editCheck(func(m map[string]any) {
		raw, _ := base64.StdEncoding.DecodeString(m["manifest"].(string))
		re := regexp.MustCompile(`"` + field + `": "[0-9a-f]`)
		edited := re.ReplaceAllFunc(raw, func(match []byte) []byte {
			out := bytes.Clone(match)
			last := &out[len(out)-1]
			if *last == '0' {
				*last = '1'
			} else {
				*last = '0'
			}
			return out
		})
		if bytes.Equal(edited, raw) {
			panic("manifest has no field " + field)
		}
		m["manifest"] = base64.StdEncoding.EncodeToString(edited)
	})
}

// asDevice answers every check with what the server tells another device:
// a validly signed offer that is wrong for this one.
func asDevice(t *testing.T, h *harness, id, hardware, version string, counter uint32) func([]byte) []byte {
	d, err := h.admin.AddDevice(context.Background(), protocol.AddDevice{ID: id, Hardware: hardware, Version: version})
	if err != nil {
		t.Fatal(err)
	}
	psk, _ := protocol.ParsePSK(d.PSK)
	other, _ := client.NewDevice(h.serverURL, id, psk)
	var mu sync.Mutex
	return func([]byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		r, err := other.Check(context.Background(), protocol.CheckRequest{Version: version, Hardware: hardware, SecurityCounter: counter})
		if err != nil {
			t.Errorf("attacker check: %v", err)
		}
		b, _ := json.Marshal(r)
		return b
	}
}

// publishSigned publishes a bundle whose manifest was changed before
// signing with the real key: what a mistaken or malicious release build does.
func publishSigned(t *testing.T, h *harness, version string, change func(m *bundle.Manifest)) {
	img, _ := firmware.Sample(firmware.SampleOptions{Version: version, Size: 20 << 10})
	b := h.Bundle(version, img, 0, 0)
	env, _ := bundle.ReadEnvelope(bytes.NewReader(b))
	m, _ := env.Unverified()
	change(m)
	mb, _ := json.MarshalIndent(m, "", "  ")
	mb = append(mb, '\n')
	sig, _ := h.signer.Sign(mb)
	var out bytes.Buffer
	hdr := make([]byte, bundle.HeaderSize)
	copy(hdr, bundle.Magic)
	binary.BigEndian.PutUint16(hdr[4:], bundle.FormatVersion)
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(mb)))
	binary.BigEndian.PutUint16(hdr[12:], uint16(len(sig)))
	out.Write(hdr)
	out.Write(mb)
	out.Write(sig)
	out.Write(b[env.PayloadOffset():])
	h.Publish(out.Bytes())
}

// TestAttackTable: one row per attack. Each must fail with its specific
// error, leave the boot state as it was, and let no byte of a bad chunk
// reach the slot.
func TestAttackTable(t *testing.T) {
	other, _ := keys.Generate(keys.AlgRSA, rand.Reader)
	rows := []struct {
		name    string
		setup   func(t *testing.T, h *harness, m *mitm)
		want    string
		cfg     func(c *agent.Config)
		counter uint32 // the device's stored security counter
	}{
		{"unsigned manifest", func(t *testing.T, h *harness, m *mitm) {
			m.check = editCheck(func(c map[string]any) { c["signature"] = "" })
		}, "signature does not match key", nil, 0},
		{"signature by an untrusted key", func(t *testing.T, h *harness, m *mitm) {
			m.check = editCheck(func(c map[string]any) {
				raw, _ := base64.StdEncoding.DecodeString(c["manifest"].(string))
				raw = regexp.MustCompile(`"key_id": "[0-9a-f]+"`).ReplaceAll(raw, []byte(`"key_id": "`+other.Public().ID()+`"`))
				sig, _ := other.Sign(raw)
				c["manifest"], c["signature"] = base64.StdEncoding.EncodeToString(raw), base64.StdEncoding.EncodeToString(sig)
			})
		}, "signed by an untrusted key", nil, 0},
		{"version changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = editManifest(`"version": "1.0.4"`, `"version": "9.9.9"`)
		}, "signature does not match key", nil, 0},
		{"hardware changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = editManifest(`"hardware": "esp32"`, `"hardware": "esp32x"`)
		}, "signature does not match key", nil, 0},
		{"security counter changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = editManifest(`"security_counter": 0`, `"security_counter": 7`)
		}, "signature does not match key", nil, 0},
		{"size changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = editManifest(`"plaintext_size": (\d+)`, `"plaintext_size": 1$1`)
		}, "signature does not match key", nil, 0},
		{"plaintext hash changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = flipManifestField("plaintext_sha256")
		}, "signature does not match key", nil, 0},
		{"ciphertext hash changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = flipManifestField("ciphertext_sha256")
		}, "signature does not match key", nil, 0},
		{"IV changed after signing", func(t *testing.T, h *harness, m *mitm) {
			m.check = flipManifestField("iv")
		}, "signature does not match key", nil, 0},
		{"chunk count beyond the signed size", func(t *testing.T, h *harness, m *mitm) {
			m.check = editCheck(func(c map[string]any) { c["chunks"] = c["chunks"].(float64) + 100 })
		}, "disagrees with the signed manifest", nil, 0},
		{"downgrade to an older signed release", func(t *testing.T, h *harness, m *mitm) {
			h.publish("1.0.2", firmware.Healthy, 20<<10)
			m.check = asDevice(t, h, "attacker-old", "esp32", "1.0.1", 0)
			if err := h.admin.Pin(context.Background(), "attacker-old", "1.0.2"); err != nil {
				t.Fatal(err)
			}
		}, "not newer than the running 1.0.3 (downgrade)", nil, 0},
		{"older signed release relabelled as 9.9.9", func(t *testing.T, h *harness, m *mitm) {
			// The attack the EcoWatt API needs the app descriptor against;
			// here the manifest carries the version under the signature.
			h.publish("1.0.2", firmware.Healthy, 20<<10)
			offer := asDevice(t, h, "attacker-relabel", "esp32", "1.0.1", 0)
			if err := h.admin.Pin(context.Background(), "attacker-relabel", "1.0.2"); err != nil {
				t.Fatal(err)
			}
			relabel := editManifest(`"version": "1.0.2"`, `"version": "9.9.9"`)
			m.check = func(b []byte) []byte {
				return editCheck(func(c map[string]any) { c["version"] = "9.9.9" })(relabel(offer(b)))
			}
		}, "signature does not match key", nil, 0},
		{"lower security counter", func(t *testing.T, h *harness, m *mitm) {
			h.Publish(h.Bundle("1.0.5", h.Sample("1.0.5", firmware.Healthy, 20<<10, 1), 0, 1))
			m.check = asDevice(t, h, "attacker-counter", "esp32", "1.0.3", 0)
		}, "security counter 1 is below the device's 3", nil, 3},
		{"wrong hardware", func(t *testing.T, h *harness, m *mitm) {
			img := h.Sample("1.0.6", firmware.Healthy, 20<<10, 0)
			var out bytes.Buffer
			bundle.Build(&out, bytes.NewReader(img), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32s3", Version: "1.0.6",
				Signer: h.signer, FirmwareKey: h.fwKey, TempDir: t.TempDir()})
			h.Publish(out.Bytes())
			m.check = asDevice(t, h, "attacker-s3", "esp32s3", "1.0.3", 0)
		}, "built for esp32s3, this device is esp32", nil, 0},
		{"chunk with a bad HMAC", func(t *testing.T, h *harness, m *mitm) {
			m.chunks = func(_ *http.Request, b []byte) []byte {
				fs := splitFrames(b)
				fs[len(fs)-1].data[3] ^= 0x55
				return joinFrames(fs)
			}
		}, "chunk HMAC mismatch", nil, 0},
		{"valid chunk replayed from another session", func(t *testing.T, h *harness, m *mitm) {
			// A recorded download of the same release by the same device,
			// whose session was then ended.
			old := recordSession(t, h, "dev1")
			m.chunks = func(req *http.Request, b []byte) []byte {
				from, _ := strconv.Atoi(req.URL.Query().Get("from"))
				fs := splitFrames(b)
				for i := range fs {
					fs[i] = old[from+i]
				}
				return joinFrames(fs)
			}
		}, "chunk HMAC mismatch", nil, 0},
		{"a chunk of another device", func(t *testing.T, h *harness, m *mitm) {
			theirs := recordSession(t, h, "neighbour")
			m.chunks = func(req *http.Request, b []byte) []byte {
				from, _ := strconv.Atoi(req.URL.Query().Get("from"))
				fs := splitFrames(b)
				fs[0] = theirs[from]
				return joinFrames(fs)
			}
		}, "chunk HMAC mismatch", nil, 0},
		{"chunks swapped", func(t *testing.T, h *harness, m *mitm) {
			m.chunks = func(_ *http.Request, b []byte) []byte {
				fs := splitFrames(b)
				if len(fs) > 1 {
					fs[0].data, fs[1].data = fs[1].data, fs[0].data
					fs[0].mac, fs[1].mac = fs[1].mac, fs[0].mac
				}
				return joinFrames(fs)
			}
		}, "chunk HMAC mismatch", nil, 0},
		{"endless data", func(t *testing.T, h *harness, m *mitm) {
			// The first frame claims a gigabyte and the data never ends.
			m.chunks = func(_ *http.Request, b []byte) []byte {
				fs := splitFrames(b)
				return append(protocol.AppendFrameHeader(nil, fs[0].index, 1<<30, &[32]byte{}), make([]byte, 256<<10)...)
			}
		}, "malformed chunk frame", nil, 0},
		{"truncated image", func(t *testing.T, h *harness, m *mitm) {
			m.chunks = func(_ *http.Request, b []byte) []byte {
				fs := splitFrames(b)
				var keep []frame
				for _, f := range fs {
					if f.index < 19 {
						keep = append(keep, f)
					}
				}
				return joinFrames(keep)
			}
		}, "empty answer", nil, 0},
		{"valid chunks whose plaintext hash fails", func(t *testing.T, h *harness, m *mitm) {
			h.Store.DeleteRelease(context.Background(), 1)
			publishSigned(t, h, "1.0.7", func(m *bundle.Manifest) { m.PlaintextSHA256 = strings.Repeat("0", 64) })
		}, "firmware sha256 mismatch", nil, 0},
		{"stalled server (slow retrieval)", func(t *testing.T, h *harness, m *mitm) {
			m.delay = 100 * time.Millisecond
		}, "did not finish within 250ms", func(c *agent.Config) { c.UpdateTimeout = 250 * time.Millisecond; c.ChunksPerRequest = 2 }, 0},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 20<<10)
			m, url := newMITM(t, h.serverURL)
			d := h.newDeviceWithCounter("dev1", agent.APINative, slotSize, row.counter)
			row.setup(t, h, m)
			d.configHook = func(c *agent.Config) {
				c.Server = url
				c.Retry = agent.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}
				c.ChunkRetries = 1
				if row.cfg != nil {
					row.cfg(c)
				}
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			before, _ := d.slots.Status()
			counterBefore := counterOf(t, d)
			_, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("error %v, want one saying %q", err, row.want)
			}
			after, _ := d.slots.Status()
			if after.Next != before.Next || counterOf(t, d) != counterBefore || after.Slots[0] != before.Slots[0] ||
				after.Slots[1].State != agent.ImageEmpty && after.Slots[1] != before.Slots[1] {
				t.Fatalf("boot state changed:\nbefore %+v\nafter  %+v", before, after)
			}
			// Whatever reached slot 1 is a prefix of the real firmware.
			fw := h.Sample("1.0.4", firmware.Healthy, 20<<10, 0)
			got := make([]byte, len(fw))
			n, _ := d.slots.ReadAt(1, got, 0)
			if n > 0 && !bytes.Equal(got[:n], fw[:n]) && row.name != "valid chunks whose plaintext hash fails" {
				t.Fatalf("slot 1 holds %d bytes that are not the firmware", n)
			}
			// The device still boots its image.
			d.fault = nil
			if err := d.powerOn(); err != nil || d.running() != "1.0.3" {
				t.Fatalf("after the attack: running %s, %v", d.running(), err)
			}
		})
	}
}

// recordSession downloads release 1.0.4 as device id (registering it if
// needed) and ends the session, returning the frames it received.
func recordSession(t *testing.T, h *harness, id string) map[int]frame {
	ctx := context.Background()
	var psk protocol.PSK
	if d, err := h.Store.Device(ctx, id); err == nil {
		psk = d.PSK
	} else {
		psk = h.AddDevice(id, "1.0.3")
	}
	dev, _ := client.NewDevice(h.serverURL, id, psk)
	r, err := dev.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !r.Update {
		t.Fatalf("recording check: %+v %v", r, err)
	}
	frames := map[int]frame{}
	dev.Chunks(ctx, r.SessionID, protocol.PreferredChunkMAC(r.ChunkMACs), 0, r.Chunks, r.ChunkSize, func(f protocol.Frame) error {
		frames[f.Index] = frame{index: f.Index, mac: append([]byte(nil), f.MAC[:]...), data: append([]byte(nil), f.Data...)}
		return nil
	})
	if err := dev.Report(ctx, r.SessionID, "failed", "recorded for a replay test"); err != nil {
		t.Fatal(err)
	}
	return frames
}

func (h *harness) newDeviceWithCounter(id, api string, size int64, counter uint32) *device {
	h.t.Helper()
	policy := api
	if policy == "" {
		policy = agent.APINative
	}
	psk := h.AddDeviceAPI(id, "1.0.3", policy)
	disk, err := slotfile.NewOSDisk(h.t.TempDir())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { disk.Close() })
	img, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3", SecureVersion: counter})
	if err := slotfile.Format(disk, size, img, agent.Image{Version: "1.0.3", Size: int64(len(img)), SHA256: sha256.Sum256(img), SecurityCounter: counter}); err != nil {
		h.t.Fatal(err)
	}
	return &device{h: h, id: id, api: api, psk: psk, disk: disk, size: size}
}
