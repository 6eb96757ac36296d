package server

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// With two places, a third connection waits in the accept queue until one
// closes; while crowded, answers say Connection: close, and the server
// closes after answering.
func TestConnLimiter(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitConns(raw, 2)
	release := make(chan struct{})
	var served sync.WaitGroup
	hs := &http.Server{Handler: ln.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			served.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	url := "http://" + raw.Addr().String()

	// A client each: one connection each.
	client := func() *http.Client { return &http.Client{Transport: &http.Transport{}} }
	served.Add(2)
	holders := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := client().Get(url + "/hold")
			if err == nil {
				resp.Body.Close()
			}
			holders <- err
		}()
	}
	served.Wait() // both places taken
	if n := ln.Open(); n != 2 {
		t.Fatalf("%d connections open, want 2", n)
	}
	third := make(chan *http.Response, 1)
	go func() {
		resp, err := client().Get(url + "/quick")
		if err != nil {
			t.Error(err)
		}
		third <- resp
	}()
	select {
	case <-third:
		t.Fatal("a third connection was served while two held both places")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for range 2 {
		if err := <-holders; err != nil {
			t.Fatal(err)
		}
	}
	resp := <-third
	if resp == nil {
		t.FailNow()
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("answer while crowded did not say Connection: close")
	}
	// Everyone gone: the places are free again.
	deadline := time.Now().Add(5 * time.Second)
	for ln.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ln.Open(); n != 0 {
		t.Fatalf("%d connections still counted open", n)
	}
	hs.Close()
	if err := <-done; err != http.ErrServerClosed {
		t.Fatalf("serve: %v", err)
	}
}

// Below three quarters of the places, keep-alive is honoured.
func TestConnLimiterKeepsAliveWhenQuiet(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitConns(raw, 100)
	hs := &http.Server{Handler: ln.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))}
	go hs.Serve(ln)
	defer hs.Close()
	c := &http.Client{Transport: &http.Transport{}}
	for range 3 {
		resp, err := c.Get("http://" + raw.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("Connection: close with one connection of 100")
		}
	}
	if n := ln.Open(); n != 1 {
		t.Fatalf("%d connections for three requests on keep-alive, want 1", n)
	}
}

func TestConnMetrics(t *testing.T) {
	e := newEnv(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	e.srv.WatchConns(LimitConns(raw, 7))
	text := e.metricsText()
	for _, want := range []string{"fota_http_connections_open 0\n", "fota_http_connections_limit 7\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
