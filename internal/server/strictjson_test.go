package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

func TestCheckKeys(t *testing.T) {
	fields := []string{"a", "b"}
	for _, tc := range []struct {
		body string
		want string // "" for accepted
	}{
		{`{"a":1,"b":2}`, ""},
		{`{"a":{"x":1,"y":[1,{"x":2,"z":3}]},"b":[{"x":1},{"x":2}]}`, ""},
		{`{"a":1,"a":2}`, `"a" twice`},
		{`{"a":{"x":1,"x":2}}`, `"x" twice`},
		{`{"a":[{"x":1,"y":2,"x":3}]}`, `"x" twice`},
		{`{"A":1}`, `unknown field "A"`},
		{`{"a":{"A":1,"a":2}}`, ""}, // nested keys are the decoder's business
		{`{"a":"b","b":"a"}`, ""},   // values that look like keys
		{`{"a":"x\"y","b":"{\"a\":1}"}`, ""},
		{`{"\u0061":1}`, "escapes"},
		{`{"a":1,"\u0061":2}`, "escapes"},
		{` { "a" : [ 1 , 2.5e3 , true , null ] , "b" : { } } `, ""},
	} {
		err := checkKeys([]byte(tc.body), fields)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
		}
	}
}

// Every API refuses duplicate and case-variant keys and trailing data.
func TestStrictJSONOnEveryAPI(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	native := func(body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/v1/device/check", strings.NewReader(body))
		protocol.SignRequest(req, "dev1", psk, []byte(body), e.now())
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		return w
	}
	admin := func(body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/v1/admin/devices", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		return w
	}
	for _, tc := range []struct {
		name string
		call func(string) *httptest.ResponseRecorder
		body string
		want string
	}{
		{"native duplicate", native, `{"version":"9.9.9","version":"1.0.3","hardware":"esp32"}`, "twice"},
		{"native case", native, `{"Version":"1.0.3","hardware":"esp32"}`, "case-sensitive"},
		{"native trailing", native, `{"version":"1.0.3","hardware":"esp32"}}`, "data after"},
		{"admin duplicate", admin, `{"id":"d9","id":"d8","hardware":"esp32","version":"1.0.3"}`, "twice"},
		{"admin case", admin, `{"ID":"d9","hardware":"esp32","version":"1.0.3"}`, "case-sensitive"},
		{"admin trailing", admin, `{"id":"d9","hardware":"esp32","version":"1.0.3"} x`, "data after"},
	} {
		w := tc.call(tc.body)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want 400 saying %q", tc.name, w.Code, w.Body, tc.want)
		}
	}
	// Well-formed bodies still pass.
	if w := native(`{"version":"1.0.3","hardware":"esp32"}`); w.Code != 200 {
		t.Fatalf("native check: %d %s", w.Code, w.Body)
	}
	if _, err := e.admin.Devices(context.Background()); err != nil {
		t.Fatal(err)
	}
}
