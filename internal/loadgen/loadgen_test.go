package loadgen

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/testserver"
)

func TestLoadRunCompletesUpdates(t *testing.T) {
	for _, mode := range []struct{ api, verify string }{{agent.APINative, VerifyFull}, {agent.APIEcoWatt, VerifyFull}, {agent.APINative, VerifyHMAC}} {
		api := mode.api
		t.Run(api+"-"+mode.verify, func(t *testing.T) {
			s := testserver.New(t)
			rep, err := Run(context.Background(), Config{Server: s.URL, Token: s.Token, Devices: 6, API: api, Verify: mode.verify,
				ReleaseSize: 32 << 10, Signer: s.Signer, FirmwareKey: s.FWKey, ChunksPerRequest: 5, Keep: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Completed != 6 || rep.Failed != 0 {
				t.Fatalf("completed %d, failed %d, errors %v", rep.Completed, rep.Failed, rep.Errors)
			}
			chunks := int64(6 * (rep.CiphertextBytes + 1023) / 1024)
			if rep.Chunks != chunks || rep.Check.Count < 6 || rep.Chunk.Count == 0 || rep.ConnsPerUpdate < 1 {
				t.Fatalf("report %+v (want %d chunks)", rep, chunks)
			}
			ratio := rep.WireBytesPerUpdate / float64(rep.CiphertextBytes)
			if api == agent.APINative && (ratio < 1 || ratio > 1.3) || api == agent.APIEcoWatt && ratio < 1.3 {
				t.Fatalf("%s: %.2fx the ciphertext on the wire", api, ratio)
			}
			// Every load device confirmed the release, and was kept.
			devs, _ := s.Admin.Devices(context.Background())
			if len(devs) != 6 || !rep.Kept {
				t.Fatalf("%d devices kept (report says kept: %v), want 6", len(devs), rep.Kept)
			}
			for _, d := range devs {
				if d.Version != "2.0.0" {
					t.Fatalf("load device %s ended on %s", d.ID, d.Version)
				}
			}
			sessions, _ := s.Admin.Sessions(context.Background())
			if sessions.ActiveSessions != 0 {
				t.Fatalf("%d sessions left open", sessions.ActiveSessions)
			}
		})
	}
}

// With NoKeepAlive every request opens its own connection: check-in, each
// chunks request and the report.
func TestLoadNoKeepAlive(t *testing.T) {
	s := testserver.New(t)
	rep, err := Run(context.Background(), Config{Server: s.URL, Token: s.Token, Devices: 3, API: agent.APINative, Verify: VerifyHMAC,
		ReleaseSize: 8 << 10, Signer: s.Signer, FirmwareKey: s.FWKey, ChunksPerRequest: 2, NoKeepAlive: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 3 || rep.Failed != 0 {
		t.Fatalf("completed %d, failed %d, errors %v", rep.Completed, rep.Failed, rep.Errors)
	}
	// 8 KiB + padding is 9 chunks: 5 chunks requests, a check and a report.
	if rep.ConnsPerUpdate != 7 {
		t.Fatalf("%.2f TCP connections per update, want 7 (one per request)", rep.ConnsPerUpdate)
	}
}

func TestLoadCheckOnly(t *testing.T) {
	s := testserver.New(t)
	rep, err := Run(context.Background(), Config{Server: s.URL, Token: s.Token, Devices: 20, ReleaseSize: 4 << 10,
		Signer: s.Signer, FirmwareKey: s.FWKey, CheckOnly: true, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 20 || rep.Failed != 0 || rep.Check.Count != 20 || rep.Chunk.Count != 0 {
		t.Fatalf("check-only run: %+v", rep)
	}
	if sessions, _ := s.Admin.Sessions(context.Background()); sessions.ActiveSessions != 0 {
		t.Fatalf("check-ins opened %d sessions", sessions.ActiveSessions)
	}
}

func TestLoadRefusesBadModes(t *testing.T) {
	s := testserver.New(t)
	for _, cfg := range []Config{
		{API: agent.APIEcoWatt, Verify: VerifyHMAC},
		{API: agent.APINative, Verify: VerifyHMAC, CheckOnly: true},
		{API: agent.APINative, Verify: "none"},
	} {
		cfg.Server, cfg.Token, cfg.Devices, cfg.ReleaseSize, cfg.Signer, cfg.FirmwareKey = s.URL, s.Token, 1, 4<<10, s.Signer, s.FWKey
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s/%s check-only=%v accepted", cfg.API, cfg.Verify, cfg.CheckOnly)
		}
	}
}

// Chunks altered on the way fail their HMAC check, in HMAC-only mode too,
// and the run says so.
func TestLoadHMACModeCatchesAlteredChunks(t *testing.T) {
	s := testserver.New(t)
	target, _ := url.Parse(s.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/chunks") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		body[len(body)-1] ^= 1 // the last chunk's last byte
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil
	}
	altering := httptest.NewServer(proxy)
	defer altering.Close()
	rep, err := Run(context.Background(), Config{Server: altering.URL, Token: s.Token, Devices: 2, API: agent.APINative, Verify: VerifyHMAC,
		ReleaseSize: 8 << 10, Signer: s.Signer, FirmwareKey: s.FWKey})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 0 || rep.Failed != 2 || rep.Errors["chunk HMAC mismatch"] != 2 {
		t.Fatalf("altered chunks: completed %d, failed %d, errors %v", rep.Completed, rep.Failed, rep.Errors)
	}
}

// Without Keep a run leaves nothing on the server but history: its devices
// removed (unknown to the device APIs), its release deleted.
func TestLoadRemovesItsData(t *testing.T) {
	s := testserver.New(t)
	ctx := context.Background()
	rep, err := Run(ctx, Config{Server: s.URL, Token: s.Token, Devices: 3, API: agent.APINative, Verify: VerifyHMAC,
		ReleaseSize: 8 << 10, Signer: s.Signer, FirmwareKey: s.FWKey})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 3 || rep.Kept || rep.Run == "" {
		t.Fatalf("report %+v", rep)
	}
	if devs, _ := s.Admin.Devices(ctx); len(devs) != 0 {
		t.Fatalf("%d load devices left registered", len(devs))
	}
	if rels, _ := s.Admin.Releases(ctx); len(rels) != 0 {
		t.Fatalf("load release left: %+v", rels)
	}
	d, err := s.Admin.Device(ctx, "load-"+rep.Run+"-00000")
	if err != nil || d.Device.Removed.IsZero() {
		t.Fatalf("a load device after the run: %+v %v; want it removed, its history kept", d, err)
	}
}

// A server that caps connections per client address still serves a whole
// simulated fleet on loopback: each device connects from its own address,
// as real devices do, rather than the fleet looking like one client.
func TestLoadSpreadsDevicesOverAddresses(t *testing.T) {
	s := testserver.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := server.LimitConns(ln, 1000, 10)
	hs := &http.Server{Handler: lim.Handler(s.HTTP.Config.Handler), ConnState: lim.ConnState, ConnContext: lim.ConnContext}
	go hs.Serve(lim)
	t.Cleanup(func() { hs.Close() })
	rep, err := Run(context.Background(), Config{Server: "http://" + ln.Addr().String(), Token: s.Token, Devices: 60, API: agent.APINative, ChunkDelay: 100 * time.Millisecond,
		ReleaseSize: 16 << 10, Signer: s.Signer, FirmwareKey: s.FWKey, ChunksPerRequest: 1, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 60 || rep.Failed != 0 {
		t.Fatalf("completed %d, failed %d, errors %v", rep.Completed, rep.Failed, rep.Errors)
	}
}
