package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// deviceRoute is one route a device (or anyone) reaches: where the fuzzed
// session string goes, and who signs.
type deviceRoute struct {
	method, path string // path has {S} where the session or payload id goes, {Q} for the query
	signer       string // the native device that signs; "" for none
}

var deviceRoutes = []deviceRoute{
	{"GET", "/v1/device/sessions/{S}/chunks?{Q}", "dev1"},
	{"GET", "/v1/device/sessions/{S}/macs?{Q}", "dev1"},
	// Reports and check-ins come from devices of their own, so the fuzzer
	// does not end the session whose chunks and MACs it checks.
	{"POST", "/v1/device/sessions/{S}/report?{Q}", "dev2"},
	{"POST", "/v1/device/check?{Q}", "dev3"},
	{"GET", "/v1/payload/{S}", ""}, // the query is sent as a Range header
	{"POST", "/ota/check?{Q}", ""},
	{"POST", "/ota/chunk?{Q}", ""},
	{"POST", "/ota/verify?{Q}", ""},
	{"POST", "/ota/complete?{Q}", ""},
	{"GET", "/ota/status?{Q}", ""},
	{"GET", "/ota/status?{Q}", "admin"},
	{"GET", "/healthz?{Q}", ""},
}

// FuzzDeviceRoutes sends every device-facing route, with its own method or
// a fuzzed one, fuzzed query strings, session ids and bodies; native
// requests are signed with the real device key, so they reach the
// handlers. An empty session string means the real one. Beyond checkAnswer,
// every chunks and MACs answer must carry exactly the right chunks and
// MACs of the range it says it answers.
func FuzzDeviceRoutes(f *testing.F) {
	requireSeeds(f, "FuzzDeviceRoutes")
	e := newEnv(f)
	publishChunked(f, e, "1.0.4", 20<<10, 256)
	psks := map[string]protocol.PSK{"eco": e.addDeviceAPI("eco", "1.0.3", fota.APIEcoWatt)}
	sessions := map[string]*protocol.CheckResponse{}
	for _, id := range []string{"dev1", "dev2", "dev3"} {
		psk := e.addDeviceAPI(id, "1.0.3", fota.APINative)
		r, err := e.device(id, psk).Check(context.Background(), protocol.CheckRequest{Version: "1.0.3"})
		if err != nil || !r.Update {
			f.Fatalf("check of %s: %+v %v", id, r, err)
		}
		psks[id], sessions[id] = psk, r
	}
	e.call("POST", "/ota/check", `{"device_id":"eco","current_version":"1.0.3"}`, nil)
	r1 := sessions["dev1"]
	ct := e.payloadOf(f, r1)
	want := map[protocol.ChunkMACScheme][]byte{}
	for _, scheme := range protocol.ChunkMACSchemes {
		want[scheme] = wantMACs(psks["dev1"], r1, scheme, ct)
	}
	sha := strings.TrimPrefix(r1.PayloadURL, "/v1/payload/")

	f.Fuzz(func(t *testing.T, route uint8, method, session, query string, body []byte) {
		rt := deviceRoutes[int(route)%len(deviceRoutes)]
		if method == "" {
			method = rt.method
		}
		if session == "" {
			session = sha
			if rt.signer != "" && rt.signer != "admin" {
				session = sessions[rt.signer].SessionID
			}
		}
		path := strings.Replace(rt.path, "{S}", session, 1)
		path = strings.Replace(path, "{Q}", query, 1)
		req, err := http.NewRequest(method, "http://fota"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client can send
		}
		switch rt.signer {
		case "":
		case "admin":
			req.Header.Set("Authorization", "Bearer "+e.token)
		default:
			protocol.SignRequest(req, rt.signer, psks[rt.signer], body, e.now())
		}
		if strings.HasPrefix(rt.path, "/v1/payload/") {
			req.Header.Set("Range", query)
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		for _, psk := range psks {
			checkAnswer(t, w, psk)
		}
		if w.Code != 200 || method != "GET" || session != r1.SessionID {
			return
		}
		q := req.URL.Query()
		from, _ := strconv.Atoi(q.Get("from"))
		scheme, _ := protocol.ParseChunkMACScheme(q.Get("mac"))
		if n := w.Body.Len(); w.Header().Get("Content-Length") != strconv.Itoa(n) {
			t.Fatalf("%s: %d bytes, Content-Length %q", path, n, w.Header().Get("Content-Length"))
		}
		switch {
		case strings.HasSuffix(req.URL.Path, "/macs"):
			got := w.Body.Bytes()
			if len(got) == 0 || len(got)%32 != 0 || len(got) > 1<<20 || from*32+len(got) > len(want[scheme]) ||
				!bytes.Equal(got, want[scheme][from*32:from*32+len(got)]) {
				t.Fatalf("%s: %d bytes that are not MACs %d on of %d chunks (%s)", path, len(got), from, r1.Chunks, scheme)
			}
		case strings.HasSuffix(req.URL.Path, "/chunks"):
			frames := protocol.NewFrameReader(w.Body, r1.ChunkSize, 0)
			for i := from; ; i++ {
				fr, err := frames.Next()
				if err == io.EOF && i > from {
					break
				}
				if err != nil || fr.Index != i || !bytes.Equal(fr.Data, ct[i*r1.ChunkSize:min((i+1)*r1.ChunkSize, len(ct))]) ||
					!hmac.Equal(fr.MAC[:], want[scheme][i*32:(i+1)*32]) {
					t.Fatalf("%s: frame %d is not chunk %d with its %s MAC (%v)", path, fr.Index, i, scheme, err)
				}
			}
		}
	})
}

// adminRoutes are every admin route; {P} is where the fuzzed path
// parameter goes.
var adminRoutes = []struct{ method, path string }{
	{"POST", "/v1/admin/releases?{Q}"},
	{"GET", "/v1/admin/releases?{Q}"},
	{"DELETE", "/v1/admin/releases/esp32/{P}?{Q}"},
	{"DELETE", "/v1/admin/releases/{P}?{Q}"}, // hardware and version both from the parameter
	{"POST", "/v1/admin/devices?{Q}"},
	{"GET", "/v1/admin/devices?{Q}"},
	{"GET", "/v1/admin/devices/{P}?{Q}"},
	{"PUT", "/v1/admin/devices/{P}/pin?{Q}"},
	{"DELETE", "/v1/admin/devices/{P}/pin?{Q}"},
	{"PUT", "/v1/admin/devices/{P}/api?{Q}"},
	{"GET", "/v1/admin/devices/{P}/backoffs?{Q}"},
	{"DELETE", "/v1/admin/devices/{P}/backoffs?{Q}"},
	{"GET", "/v1/admin/sessions?{Q}"},
	{"GET", "/v1/admin/events?{Q}"},
	{"GET", "/metrics?{Q}"},
}

// FuzzAdminRoutes sends every admin route, with its own method or a
// fuzzed one, fuzzed path parameters, query strings and bodies, with the
// admin token or without: never a 500, errors always JSON, and nothing
// succeeds without the token.
func FuzzAdminRoutes(f *testing.F) {
	requireSeeds(f, "FuzzAdminRoutes")
	e := newEnv(f)
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	e.device("dev1", psk).Check(context.Background(), protocol.CheckRequest{Version: "1.0.3"})
	f.Fuzz(func(t *testing.T, route uint8, method, param, query string, body []byte, authed bool) {
		rt := adminRoutes[int(route)%len(adminRoutes)]
		if method == "" {
			method = rt.method
		}
		path := strings.Replace(strings.Replace(rt.path, "{P}", param, 1), "{Q}", query, 1)
		req, err := http.NewRequest(method, "http://fota"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client can send
		}
		if authed {
			req.Header.Set("Authorization", "Bearer "+e.token)
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		checkAnswer(t, w, psk)
		if !authed && w.Code >= 200 && w.Code < 300 {
			t.Fatalf("%s %s without a token got %d", method, path, w.Code)
		}
	})
}
