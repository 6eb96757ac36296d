package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// The attack that worked on the old server: with only a native device's
// id, an unauthenticated /ota/check then /ota/complete {"boot_status":
// "failed"} marked its release rolled back for good. Now every /ota/*
// request for it is refused with 403, logged, and it still updates.
func TestForgedEcoWattFailureCannotReachNativeDevice(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	psk := e.addDeviceAPI("victim", "1.0.3", fota.APINative)

	for _, req := range []struct{ path, body string }{
		{"/ota/check", `{"device_id":"victim","current_version":"1.0.3"}`},
		{"/ota/chunk", `{"device_id":"victim","version":"1.0.4","chunk_number":0}`},
		{"/ota/verify", `{"device_id":"victim","version":"1.0.4","verified":false}`},
		{"/ota/complete", `{"device_id":"victim","version":"1.0.4","boot_status":"failed"}`},
	} {
		status, body := e.call("POST", req.path, req.body, nil)
		wantStatus(t, status, body, 403, "registered for the native API only")
	}
	if !strings.Contains(e.logs.String(), "request refused by the device's API policy") {
		t.Fatal("refusals were not logged")
	}
	d := e.device("victim", psk)
	resp, err := d.Check(context.Background(), protocol.CheckRequest{Version: "1.0.3", Hardware: "esp32"})
	if err != nil || !resp.Update || resp.Version != "1.0.4" {
		t.Fatalf("native check after the forged requests: %+v %v", resp, err)
	}
	// And with a native session open, still nothing on /ota/* reaches it.
	status, body := e.call("POST", "/ota/complete", `{"device_id":"victim","version":"1.0.4","boot_status":"failed"}`, nil)
	wantStatus(t, status, body, 403, "")
	sess, err := e.store.Session(context.Background(), resp.SessionID)
	if err != nil || sess.State != fota.SessionOpen {
		t.Fatalf("native session after a forged report: %+v %v", sess, err)
	}
}

// An ecowatt device's forged (or real) failure report holds the release
// back for an hour, not for good; an admin can clear it at once.
func TestEcoWattFailureIsABackoffNotAnExclusion(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	e.addDeviceAPI("legacy", "1.0.3", fota.APIEcoWatt)
	check := func() map[string]any {
		status, body := e.call("POST", "/ota/check", `{"device_id":"legacy","current_version":"1.0.3"}`, nil)
		wantStatus(t, status, body, 200, "")
		return body
	}
	if body := check(); body["update_available"] != true {
		t.Fatalf("first check: %v", body)
	}
	status, body := e.call("POST", "/ota/complete", `{"device_id":"legacy","version":"1.0.4","boot_status":"failed"}`, nil)
	wantStatus(t, status, body, 200, "")
	if body := check(); body["update_available"] != false || !strings.Contains(fmt.Sprint(body["message"]), "held back until") {
		t.Fatalf("check after a failure report: %v", body)
	}
	bs, err := e.admin.Backoffs(context.Background(), "legacy")
	if err != nil || len(bs) != 1 || !bs[0].Active || bs[0].Version != "1.0.4" || bs[0].Failures != 1 {
		t.Fatalf("backoffs: %+v %v", bs, err)
	}
	e.advance(61 * 60e9)
	if body := check(); body["update_available"] != true {
		t.Fatalf("check after the backoff: %v", body)
	}
	status, body = e.call("POST", "/ota/complete", `{"device_id":"legacy","version":"1.0.4","boot_status":"failed"}`, nil)
	wantStatus(t, status, body, 200, "")
	if n, err := e.admin.ClearBackoffs(context.Background(), "legacy"); err != nil || n != 1 {
		t.Fatalf("clear: %d %v", n, err)
	}
	if body := check(); body["update_available"] != true {
		t.Fatalf("check after clearing: %v", body)
	}
}

// A loop of /ota/check and /ota/complete from one client made ~7,500
// sessions and 15,000 events in 20 s; now it gets 429 with Retry-After,
// even when it fetches every chunk so that its success reports count.
func TestEcoWattCheckFloodGets429(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	e.addDeviceAPI("legacy", "1.0.3", fota.APIEcoWatt)
	opened := 0
	for i := range 100 {
		resp, err := e.http.Client().Post(e.http.URL+"/ota/check", "application/json",
			strings.NewReader(`{"device_id":"legacy","current_version":"1.0.3"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 429 {
			retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || retry < 1 || retry > 600 {
				t.Fatalf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
			break
		}
		if resp.StatusCode != 200 {
			t.Fatalf("check %d: status %d", i, resp.StatusCode)
		}
		opened++
		for c := range 3 {
			status, body := e.call("POST", "/ota/chunk", fmt.Sprintf(`{"device_id":"legacy","version":"1.0.4","chunk_number":%d}`, c), nil)
			wantStatus(t, status, body, 200, "")
		}
		status, body := e.call("POST", "/ota/complete", `{"device_id":"legacy","version":"1.0.4","boot_status":"success"}`, nil)
		wantStatus(t, status, body, 200, "")
	}
	if opened != 3 {
		t.Fatalf("%d sessions opened before 429, want the per-device burst of 3", opened)
	}
	// device-added, then per session: opened, four progress marks, confirmed.
	evs, _ := e.admin.Events(context.Background(), "legacy", 1000)
	if len(evs) > 1+3*6 {
		t.Fatalf("%d events from a flood", len(evs))
	}
}

// One request for a late chunk does not make a session look fully served:
// on the EcoWatt API only chunks fetched (nearly) in order count, so a
// keyless attacker cannot forge a success, end the device's download and
// make it pay a rate-limit token for a new one.
func TestEcoWattProgressCountsOnlyInOrder(t *testing.T) {
	// 88 chunks of 1,024 bytes, and 9: a small release's slack is smaller.
	for _, size := range []int{90_000, 9_000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			e := newEnv(t)
			e.publish("1.0.4", size)
			e.addDeviceAPI("legacy", "1.0.3", fota.APIEcoWatt)
			status, check := e.call("POST", "/ota/check", `{"device_id":"legacy","current_version":"1.0.3"}`, nil)
			wantStatus(t, status, check, 200, "")
			total := int(check["total_chunks"].(float64))
			// The attacker fetches the last chunk (served: it is ciphertext) and
			// claims the device runs 1.0.4.
			status, body := e.call("POST", "/ota/chunk", fmt.Sprintf(`{"device_id":"legacy","version":"1.0.4","chunk_number":%d}`, total-1), nil)
			wantStatus(t, status, body, 200, "")
			for _, req := range []struct{ path, body string }{
				{"/ota/check", `{"device_id":"legacy","current_version":"1.0.4"}`},
				{"/ota/complete", `{"device_id":"legacy","version":"1.0.4","boot_status":"success"}`},
			} {
				e.call("POST", req.path, req.body, nil)
			}
			// The real device downloads on, in the same session, and its success
			// then counts.
			for i := range total {
				status, body := e.call("POST", "/ota/chunk", fmt.Sprintf(`{"device_id":"legacy","version":"1.0.4","chunk_number":%d}`, i), nil)
				wantStatus(t, status, body, 200, "")
			}
			status, body = e.call("POST", "/ota/complete", `{"device_id":"legacy","version":"1.0.4","boot_status":"success"}`, nil)
			wantStatus(t, status, body, 200, "")
			evs, _ := e.admin.Events(context.Background(), "legacy", 100)
			opened, confirmed := 0, 0
			for _, ev := range evs {
				switch ev.Kind {
				case fota.EventSessionOpened:
					opened++
				case fota.EventConfirmed:
					confirmed++
				}
			}
			if opened != 1 || confirmed != 1 {
				t.Fatalf("%d sessions opened and %d confirmed, want one of each", opened, confirmed)
			}
		})
	}
}
