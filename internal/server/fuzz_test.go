package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

func requireSeeds(f *testing.F, name string) {
	if seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", name, "*")); len(seeds) == 0 {
		f.Fatalf("seed corpus testdata/fuzz/%s is empty", name)
	}
}

// checkAnswer: whatever a client sends, the server answers with a client
// error or success in JSON, never a 500, and never echoes a secret.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, psk protocol.PSK) {
	if w.Code >= 500 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), psk.Hex()) {
		t.Fatal("answer contains the device key")
	}
	if w.Code >= 400 {
		var eb protocol.ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Code == "" {
			t.Fatalf("error answer is not JSON {error, code}: %q", w.Body)
		}
	}
}

// FuzzLegacyHandlers feeds arbitrary bodies to every EcoWatt endpoint.
func FuzzLegacyHandlers(f *testing.F) {
	requireSeeds(f, "FuzzLegacyHandlers")
	e := newEnv(f)
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	paths := []string{"/ota/check", "/ota/chunk", "/ota/verify", "/ota/complete"}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		req := httptest.NewRequest("POST", paths[int(which)%len(paths)], bytes.NewReader(body))
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		checkAnswer(t, w, psk)
	})
}

// FuzzNativeRequest feeds arbitrary authentication headers, paths and
// bodies to the native API: nothing may get past authentication without
// the key, and nothing may make the server fail.
func FuzzNativeRequest(f *testing.F) {
	requireSeeds(f, "FuzzNativeRequest")
	e := newEnv(f)
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	now := e.now().Unix()
	f.Fuzz(func(t *testing.T, path, device, ts, nonce, sig string, body []byte, sign bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/v1/device/" + path
		}
		req, err := http.NewRequest("POST", "http://fota"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if sign {
			// A correctly signed request with the fuzzed path and body
			// exercises the decoding behind authentication.
			protocol.SignRequest(req, "dev1", psk, body, e.now())
		} else {
			for k, v := range map[string]string{protocol.HeaderDevice: device, protocol.HeaderTimestamp: ts,
				protocol.HeaderNonce: nonce, protocol.HeaderSignature: sig} {
				req.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		checkAnswer(t, w, psk)
		// Redirects (the mux cleaning a path) are fine; a success is not.
		if !sign && strings.HasPrefix(req.URL.Path, "/v1/device/") && w.Code >= 200 && w.Code < 300 {
			t.Fatalf("unsigned request to %s got %d (ts %s now %d)", path, w.Code, ts, now)
		}
	})
}
