package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/browsertest"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/simulator"
	"github.com/ecowatt/fota/protocol"
)

// The dashboard in headless Chromium (internal/browsertest: every test
// there also fails on a request to another host and on a script error).
//
// FOTA_SCREENSHOTS=DIR saves the fleet and rollout pages as PNGs in DIR
// (relative to the repository root), as the README's screenshots are
// made:
//
//	FOTA_SCREENSHOTS=docs/screenshots go test ./internal/web -run TestBrowserRolloutLive

// signIn signs tab in through the form.
func signIn(tab *browsertest.Tab, name string) {
	tab.Navigate("/signin")
	tab.FillLabel("Name", name)
	tab.FillLabel("Password", testPassword)
	tab.Submit("form[action='/signin']")
	tab.WaitText("h1", "Fleet")
}

func TestBrowserPages(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		e.srv.AddDevice(fmt.Sprintf("plant-%d-inverter-monitor-with-a-long-id", i), "1.0.3")
	}
	e.srv.Publish(e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 4<<10, 0), 0, 0)) // and a rollout
	b := browsertest.New(t, e.srv.URL)
	b.Navigate("/fleet")
	b.WaitText("h1", "Sign in")
	b.AssertAccessible()
	signIn(b.Tab, "ana")
	pages := map[string]string{"/fleet": "Fleet", "/devices": "Devices", "/devices/plant-0-inverter-monitor-with-a-long-id": "Device plant-0",
		"/releases": "Releases", "/rollouts": "Rollouts", "/rollouts/new": "New rollout", "/rollouts/1": "Rollout 1", "/events": "Events",
		"/users": "Users", "/account": "Your account", "/tokens": "API tokens", "/webhooks": "Webhooks"}
	for _, width := range []int{1280, 320} {
		b.SetViewport(width, 800)
		for path, h1 := range pages {
			if status := b.Navigate(path); status != 200 {
				t.Fatalf("%s: status %d", path, status)
			}
			b.WaitText("h1", h1)
			b.AssertAccessible()
			if width == 320 {
				b.AssertNoHorizontalScroll()
			}
		}
	}
	// The chart draws one bar per version.
	b.Navigate("/fleet")
	if n := browsertest.Eval[int](b.Tab, `document.querySelectorAll("ul.bars rect").length`); n != 1 {
		t.Fatalf("fleet chart has %d bars, want 1 (every device runs 1.0.3)", n)
	}
	b.AssertNoThirdPartyRequests()
}

func TestBrowserCSRFAndRoles(t *testing.T) {
	e := newEnv(t)
	e.srv.AddDevice("dev-1", "1.0.3")
	b := browsertest.New(t, e.srv.URL)
	signIn(b.Tab, "olu")
	// A form whose token was taken away is refused.
	b.Navigate("/devices/dev-1")
	browsertest.Eval[bool](b.Tab, `(() => { document.querySelector("form[action$='/labels'] input[name=csrf]").remove(); return true; })()`)
	b.Fill("#labels-edit", "site=berlin")
	b.Submit("form[action$='/labels']")
	b.WaitText("main", "no valid CSRF token")
	if d, _ := e.srv.Store.Device(context.Background(), "dev-1"); len(d.Labels) != 0 {
		t.Fatalf("labels changed without a token: %v", d.Labels)
	}
	// With it, the change is made and names the user.
	b.Navigate("/devices/dev-1")
	b.Fill("#labels-edit", "site=berlin")
	b.Submit("form[action$='/labels']")
	b.WaitText(".flash", "Labels saved.")

	// A viewer has no rollout controls, and the server refuses the form.
	v := b.NewIncognitoTab()
	signIn(v, "vic")
	v.Navigate("/rollouts")
	if strings.Contains(v.Text("main"), "New rollout") {
		t.Fatal("a viewer sees New rollout")
	}
	if status := v.Navigate("/rollouts/new"); status != 403 {
		t.Fatalf("viewer opens the rollout form: %d", status)
	}
	v.WaitText("main", "your role, viewer, cannot do this")
}

func TestBrowserUpload(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "app-1.0.4.fota")
	if err := os.WriteFile(path, e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 256<<10, 0), 0, 0), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "truncated.fota")
	content, _ := os.ReadFile(path)
	os.WriteFile(bad, content[:len(content)/2], 0o600)

	b := browsertest.New(t, e.srv.URL)
	signIn(b.Tab, "ana")
	b.Navigate("/releases")
	b.SetFiles("#bundle", bad)
	b.Click("form[data-upload] button[type=submit]")
	b.WaitText("[data-upload-status]", "bundle refused")
	b.SetFiles("#bundle", path)
	b.Click("form[data-upload] button[type=submit]")
	b.WaitText(".flash", "Release 1.0.4 for esp32 published and verified")
	b.WaitText("table", "1.0.4")
	if max := browsertest.Eval[string](b.Tab, `document.querySelector("#upload-bar") ? "form" : "none"`); max != "form" {
		t.Fatal("the releases page lost its upload form")
	}
}

// fleet runs n simulated native devices against the test server until
// the test ends.
func runFleet(t *testing.T, e *env, n int) []*simulator.Device {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	devices := make([]*simulator.Device, n)
	for i := range n {
		id := fmt.Sprintf("inv-%02d", i)
		psk := e.srv.AddDeviceAPI(id, "1.0.3", fota.APINative)
		d, err := simulator.New(simulator.Config{
			Agent: agent.Config{Server: e.srv.URL, DeviceID: id, PSK: psk, Hardware: "esp32", TrustedKey: e.srv.Signer.Public(),
				FirmwareKey: e.srv.FWKey, CheckInterval: 200 * time.Millisecond,
				Retry: agent.RetryPolicy{Attempts: 5, Base: 50 * time.Millisecond, Max: 500 * time.Millisecond}},
			StateDir: filepath.Join(t.TempDir(), id), FactoryVersion: "1.0.3",
			PollInterval: 50 * time.Millisecond, UploadInterval: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		devices[i] = d
		wg.Go(func() { d.Run(ctx) })
	}
	return devices
}

// createRollout fills the rollout form as an operator does.
func createRollout(tab *browsertest.Tab, release, waves, maxFailures string) {
	tab.Navigate("/rollouts/new")
	tab.Fill("#release", release)
	tab.WaitText("#count", "devices match")
	tab.Fill("#waves", waves)
	tab.Fill("#max_failures", maxFailures)
	tab.Fill("#soak", "0")
	tab.Submit("form[data-rollout-form]")
	tab.WaitText(".flash", "created")
}

func TestBrowserRolloutLive(t *testing.T) {
	e := newEnv(t)
	e.srv.PublishOnly(e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.Healthy, 16<<10, 0), 0, 0))
	// Devices of other hardware that never check in: offline on the fleet
	// page, and no part of the rollout.
	for i, v := range []string{"1.0.1", "1.0.2", "1.0.2", "1.0.3"} {
		if _, err := e.srv.Admin.AddDevice(context.Background(), protocol.AddDevice{ID: fmt.Sprintf("s3-%d", i), Hardware: "esp32s3", Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	runFleet(t, e, 6)
	b := browsertest.New(t, e.srv.URL, browsertest.Timeout(90*time.Second), browsertest.WaitTimeout(45*time.Second))
	signIn(b.Tab, "olu")
	b.SetViewport(1100, 900)
	createRollout(b.Tab, "esp32/1.0.4", "2,100%", "1")
	// The page is not reloaded from here on: a mark set now must survive.
	browsertest.Eval[bool](b.Tab, `(() => { window.fotaMark = "same page"; return true; })()`)
	b.WaitText("[data-progress]", "100%")
	b.WaitText("#live", "6 confirmed")
	b.WaitText("#live", "completed")
	if mark := browsertest.Eval[string](b.Tab, `window.fotaMark || ""`); mark != "same page" {
		t.Fatal("the rollout page was reloaded; it should update itself")
	}
	if dir := os.Getenv("FOTA_SCREENSHOTS"); dir != "" {
		dir = filepath.Join("..", "..", dir) // the test runs in internal/web
		b.Screenshot(filepath.Join(dir, "rollout.png"))
		b.Navigate("/fleet")
		b.WaitText("h1", "Fleet")
		b.Screenshot(filepath.Join(dir, "fleet.png"))
	}
}

func TestBrowserHaltShown(t *testing.T) {
	e := newEnv(t)
	e.srv.PublishOnly(e.srv.Bundle("1.0.4", e.srv.Sample("1.0.4", firmware.FailSelfTest, 8<<10, 0), 0, 0))
	runFleet(t, e, 6)
	b := browsertest.New(t, e.srv.URL, browsertest.Timeout(90*time.Second), browsertest.WaitTimeout(45*time.Second))
	signIn(b.Tab, "olu")
	createRollout(b.Tab, "esp32/1.0.4", "2,100%", "0")
	b.WaitText("#live .halt", "Halted")
	b.WaitText("#live", "Failing devices")
	b.WaitText("#live", "self-test")
	b.AssertAccessible()
	// No device of the second wave was offered the broken release.
	evs, err := e.srv.Store.Events(context.Background(), fota.EventFilter{Kind: fota.EventSessionOpened, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) > 2 {
		t.Fatalf("%d sessions opened; the first wave has 2 devices", len(evs))
	}
	// Resume is offered; pressing it accepts the failures.
	b.WaitText(".actions", "Resume")
}
