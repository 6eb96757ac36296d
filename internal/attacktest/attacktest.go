// Package attacktest is what end-to-end tests of a device client need to
// attack it: a man in the middle between the device and a real test server
// (internal/testserver) that rewrites answers as a compromised server or
// network would, helpers that make such answers, and the table of attacks
// (Attacks) every native-API client must survive. The Go agent's tests and
// the C client's tests run the same rows against their own device:
//
//	for _, a := range attacktest.Attacks() {
//		t.Run(a.Name, func(t *testing.T) {
//			srv := testserver.New(t)
//			attacktest.PublishRelease(srv)
//			m := attacktest.NewMITM(t, srv.URL)
//			psk := srv.AddDeviceAPI(attacktest.DeviceID, attacktest.Running, "native")
//			a.Setup(t, srv, m)
//			// Run the device (running attacktest.Running with security
//			// counter a.Device.Counter, trusting srv.Signer, with
//			// srv.FWKey) against m.URL; its update must fail with an
//			// error of a.Kind and leave it booting what it ran.
//		})
//	}
package attacktest

import (
	"bytes"
	"context"
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

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// MITM is a reverse proxy in front of a server that rewrites its answers.
// Point the device at URL. Set the fields before the device's requests
// that they should affect; nil fields pass answers on unchanged.
type MITM struct {
	URL string
	// Check, when set, makes the check answer (a JSON object) from the
	// server's, for every POST /v1/device/check.
	Check func(orig []byte) []byte
	// Chunks rewrites every successful native chunks answer; req is the
	// device's request (its from and count).
	Chunks func(req *http.Request, body []byte) []byte
	// Delay is waited before every successful chunks answer.
	Delay time.Duration

	// mu orders the fields' writes before the proxy's reads: Settle takes it
	// after the writes (an empty critical section is the point), the proxy
	// before its reads.
	mu sync.Mutex
}

// Settle marks the fields as set: call it after setting them and before
// a device in another process makes requests. (A Go device's requests
// order themselves after the test's writes; a subprocess's reach the
// proxy over a socket, which the race detector cannot see as ordering.)
func (m *MITM) Settle() {
	m.mu.Lock()
	m.mu.Unlock()
}

// NewMITM starts a MITM in front of the server at target; it stops with
// the test.
func NewMITM(tb testing.TB, target string) *MITM {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	m := &MITM{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		path := resp.Request.URL.Path
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		m.mu.Lock()
		check, chunks, delay := m.Check, m.Chunks, m.Delay
		m.mu.Unlock()
		switch {
		case path == "/v1/device/check" && check != nil:
			body = check(body)
		case strings.HasSuffix(path, "/chunks") && resp.StatusCode == http.StatusOK:
			if delay > 0 {
				time.Sleep(delay)
			}
			if chunks != nil {
				body = chunks(resp.Request, body)
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(proxy)
	tb.Cleanup(srv.Close)
	m.URL = srv.URL
	return m
}

// SplitFrames splits a chunks answer into its frames. Data and MAC are
// copies: editing them does not change body. A cut frame at the end is
// left out.
func SplitFrames(body []byte) []protocol.Frame {
	var out []protocol.Frame
	for len(body) >= protocol.FrameHeaderSize {
		n := int(binary.BigEndian.Uint32(body[4:8]))
		if n < 0 || len(body)-protocol.FrameHeaderSize < n {
			break
		}
		f := protocol.Frame{Index: int(binary.BigEndian.Uint32(body[0:4])), Data: bytes.Clone(body[protocol.FrameHeaderSize : protocol.FrameHeaderSize+n])}
		copy(f.MAC[:], body[8:protocol.FrameHeaderSize])
		out = append(out, f)
		body = body[protocol.FrameHeaderSize+n:]
	}
	return out
}

// JoinFrames makes a chunks answer of frames.
func JoinFrames(fs []protocol.Frame) []byte {
	var out []byte
	for _, f := range fs {
		out = protocol.AppendFrameHeader(out, f.Index, len(f.Data), &f.MAC)
		out = append(out, f.Data...)
	}
	return out
}

// EditCheck returns a MITM.Check that applies edit to the decoded answer
// when it offers an update, and passes other answers on.
func EditCheck(edit func(answer map[string]any)) func([]byte) []byte {
	return func(orig []byte) []byte {
		var m map[string]any
		if json.Unmarshal(orig, &m) != nil || m["update"] != true {
			return orig
		}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
}

// EditManifest returns a MITM.Check that replaces matches of the regular
// expression re in the signed manifest's JSON text with repl (as
// regexp.ReplaceAll does), keeping the signature.
func EditManifest(re, repl string) func([]byte) []byte {
	r := regexp.MustCompile(re)
	return EditCheck(func(m map[string]any) {
		raw, _ := base64.StdEncoding.DecodeString(m["manifest"].(string))
		m["manifest"] = base64.StdEncoding.EncodeToString(r.ReplaceAll(raw, []byte(repl)))
	})
}

// FlipManifestField returns a MITM.Check that changes the first hex digit
// of a manifest field to another one, keeping the signature: a fixed
// replacement would be no change at all whenever the value already started
// with it. It panics if the manifest has no such hex field.
func FlipManifestField(field string) func([]byte) []byte {
	re := regexp.MustCompile(`"` + regexp.QuoteMeta(field) + `": "[0-9a-f]`)
	return EditCheck(func(m map[string]any) {
		raw, _ := base64.StdEncoding.DecodeString(m["manifest"].(string))
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
			panic("attacktest: manifest has no hex field " + field)
		}
		m["manifest"] = base64.StdEncoding.EncodeToString(edited)
	})
}

// AsDevice registers another device (native API) and returns a MITM.Check
// that answers every check with what the server tells that device when it
// says it runs version with counter: a validly signed offer, but one meant
// for another device.
func AsDevice(tb testing.TB, srv *testserver.Server, id, hardware, version string, counter uint32) func([]byte) []byte {
	tb.Helper()
	d, err := srv.Admin.AddDevice(context.Background(), protocol.AddDevice{ID: id, Hardware: hardware, Version: version})
	if err != nil {
		tb.Fatal(err)
	}
	psk, err := protocol.ParsePSK(d.PSK)
	if err != nil {
		tb.Fatal(err)
	}
	other, err := client.NewDevice(srv.URL, id, psk)
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	return func([]byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		r, err := other.Check(context.Background(), protocol.CheckRequest{Version: version, Hardware: hardware, SecurityCounter: counter})
		if err != nil {
			tb.Errorf("attacker check as %s: %v", id, err)
		}
		b, _ := json.Marshal(r)
		return b
	}
}

// RecordSession downloads the update the server offers to device id
// running Running (registering the device first if it is not), ends the
// session with a failure report, and returns the frames it received by
// index: chunks valid in that session only, for replaying in another.
func RecordSession(tb testing.TB, srv *testserver.Server, id string) map[int]protocol.Frame {
	tb.Helper()
	ctx := context.Background()
	var psk protocol.PSK
	if d, err := srv.Store.Device(ctx, id); err == nil {
		psk = d.PSK
	} else {
		psk = srv.AddDevice(id, Running)
	}
	dev, err := client.NewDevice(srv.URL, id, psk)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := dev.Check(ctx, protocol.CheckRequest{Version: Running})
	if err != nil || !r.Update {
		tb.Fatalf("recording check as %s: %+v %v", id, r, err)
	}
	frames := map[int]protocol.Frame{}
	if err := dev.Chunks(ctx, r.SessionID, protocol.PreferredChunkMAC(r.ChunkMACs), 0, r.Chunks, r.ChunkSize, func(f protocol.Frame) error {
		f.Data = bytes.Clone(f.Data)
		frames[f.Index] = f
		return nil
	}); err != nil {
		tb.Fatalf("recording chunks as %s: %v", id, err)
	}
	if err := dev.Report(ctx, r.SessionID, "failed", "recorded for a replay test"); err != nil {
		tb.Fatal(err)
	}
	return frames
}

// PublishSigned publishes a release of a sample image (esp32, size
// ReleaseSize) whose manifest change altered before it was signed with the
// server's real release key: what a mistaken or malicious release build
// makes. The server checks only the signature on publishing.
func PublishSigned(tb testing.TB, srv *testserver.Server, version string, change func(m *bundle.Manifest)) {
	tb.Helper()
	img, err := firmware.Sample(firmware.SampleOptions{Version: version, Size: ReleaseSize})
	if err != nil {
		tb.Fatal(err)
	}
	b := srv.Bundle(version, img, 0, 0)
	env, err := bundle.ReadEnvelope(bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := env.Unverified()
	if err != nil {
		tb.Fatal(err)
	}
	change(m)
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	mb = append(mb, '\n')
	sig, err := srv.Signer.Sign(mb)
	if err != nil {
		tb.Fatal(err)
	}
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
	srv.Publish(out.Bytes())
}
