package testserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// Tap is a reverse proxy in front of the server, for tests of the device
// side of the install window at any instant a test chooses (the server's
// own windows follow the wall clock: internal/server's
// TestRolloutWindowInCheckAnswer checks those). It passes every
// request on byte for byte (a native request's signature covers its
// body), keeping a copy of each native check-in's body, counts chunk
// requests, and adds the install window set with SetWindow to check
// answers that offer an update. Everything else is the real server's.
type Tap struct {
	URL string

	mu           sync.Mutex
	checks       [][]byte
	chunks       int
	after, until time.Time
}

// Tap starts a Tap in front of s; it stops with the test.
func (s *Server) Tap() *Tap {
	s.TB.Helper()
	target, err := url.Parse(s.URL)
	if err != nil {
		s.TB.Fatal(err)
	}
	t := &Tap{}
	proxy := &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(target) },
		ModifyResponse: t.addWindow,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/device/check":
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			t.mu.Lock()
			t.checks = append(t.checks, body)
			t.mu.Unlock()
		case strings.HasSuffix(r.URL.Path, "/chunks"):
			t.mu.Lock()
			t.chunks++
			t.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	s.TB.Cleanup(srv.Close)
	t.URL = srv.URL
	return t
}

// SetWindow makes offers say install within [after, until); zero times
// are left out, as a server leaves them out.
func (t *Tap) SetWindow(after, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.after, t.until = after, until
}

// Checks returns the bodies of the native check-ins so far, decoded.
func (t *Tap) Checks() ([]protocol.CheckRequest, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]protocol.CheckRequest, len(t.checks))
	for i, b := range t.checks {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			return nil, fmt.Errorf("check-in %d: %w", i, err)
		}
	}
	return out, nil
}

// RawChecks returns the bodies of the native check-ins so far, as sent.
func (t *Tap) RawChecks() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([][]byte(nil), t.checks...)
}

// ChunkRequests counts the chunk requests so far.
func (t *Tap) ChunkRequests() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.chunks
}

// addWindow adds the window to an answer offering an update, keeping every
// other field as the server wrote it.
func (t *Tap) addWindow(resp *http.Response) error {
	t.mu.Lock()
	after, until := t.after, t.until
	t.mu.Unlock()
	if resp.Request.URL.Path != "/v1/device/check" || resp.StatusCode != http.StatusOK || after.IsZero() && until.IsZero() {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return fmt.Errorf("check answer: %w", err)
	}
	if string(fields["update"]) == "true" {
		for name, tm := range map[string]time.Time{"install_after": after, "install_until": until} {
			if !tm.IsZero() {
				fields[name], _ = json.Marshal(tm.UTC())
			}
		}
		if body, err = json.Marshal(fields); err != nil {
			return err
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}
