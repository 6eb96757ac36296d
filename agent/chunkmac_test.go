package agent_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// The agent asks for v2 chunk HMACs when the server offers them, and
// speaks v1 to a server from before v2, which does not say.
func TestChunkMACNegotiation(t *testing.T) {
	for _, c := range []struct {
		name      string
		oldServer bool
		want      string
	}{
		{"server offers v2", false, "mac=v2"},
		{"server from before v2", true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 40_000)
			upstream, _ := url.Parse(h.serverURL)
			var mu sync.Mutex
			var chunkQueries []string
			proxy := httputil.NewSingleHostReverseProxy(upstream)
			proxy.ModifyResponse = func(resp *http.Response) error {
				req := resp.Request
				if strings.HasSuffix(req.URL.Path, "/chunks") {
					mu.Lock()
					chunkQueries = append(chunkQueries, req.URL.RawQuery)
					mu.Unlock()
				}
				if !c.oldServer || req.URL.Path != "/v1/device/check" {
					return nil
				}
				// What a server from before v2 answers: no chunk_macs.
				var answer map[string]any
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err := json.Unmarshal(body, &answer); err != nil {
					return err
				}
				delete(answer, "chunk_macs")
				body, _ = json.Marshal(answer)
				resp.Body = io.NopCloser(bytes.NewReader(body))
				resp.ContentLength = int64(len(body))
				resp.Header.Del("Content-Length")
				return nil
			}
			front := httptest.NewServer(proxy)
			t.Cleanup(front.Close)
			h.serverURL = front.URL

			d := newDev(h, "dev-mac", agent.APINative)
			if res, err := d.cycle(); err != nil || !res.Updated || res.Version != "1.0.4" {
				t.Fatalf("update: %+v %v", res, err)
			}
			if len(chunkQueries) == 0 {
				t.Fatal("no chunk requests went through the proxy")
			}
			for _, q := range chunkQueries {
				asked := strings.Contains(q, "mac=")
				if c.want == "" && asked || c.want != "" && !strings.Contains(q, c.want) {
					t.Fatalf("chunk request ?%s, want %q", q, c.want)
				}
			}
		})
	}
}
