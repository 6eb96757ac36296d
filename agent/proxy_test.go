package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// faultProxy is a TCP proxy between the device and the server that breaks
// a share of HTTP exchanges the ways real networks do. It counts every
// byte it carries to and from the device.
type faultProxy struct {
	ln       net.Listener
	upstream string
	rate     float64
	stall    time.Duration

	mu     sync.Mutex
	rng    *rand.Rand
	kinds  map[string]int
	wire   atomic.Int64
	closed atomic.Bool
}

var proxyFaults = []string{"drop-mid-body", "reset", "stall", "truncate", "flip", "500", "503", "close-after-headers"}

func startFaultProxy(t *testing.T, upstream string, rate float64, seed uint64, stall time.Duration) *faultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, upstream: upstream, rate: rate, stall: stall, rng: rand.New(rand.NewPCG(seed, 11)), kinds: map[string]int{}}
	go p.serve()
	t.Cleanup(func() { p.closed.Store(true); ln.Close() })
	return p
}

func (p *faultProxy) URL() string { return "http://" + p.ln.Addr().String() }

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}
func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (p *faultProxy) serve() {
	transport := &http.Transport{MaxIdleConnsPerHost: 8}
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(countingConn{Conn: c, n: &p.wire}, transport)
	}
}

func (p *faultProxy) pick() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() >= p.rate {
		return ""
	}
	k := proxyFaults[p.rng.IntN(len(proxyFaults))]
	p.kinds[k]++
	return k
}

func (p *faultProxy) handle(c countingConn, transport *http.Transport) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		fault := p.pick()
		switch fault {
		case "reset":
			if tc, ok := c.Conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST instead of FIN
			}
			return
		case "500", "503":
			code, _ := strconv.Atoi(fault)
			msg := `{"error":"injected","code":"internal"}`
			fmt.Fprintf(c, "HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", code, len(msg), msg)
			continue
		case "stall":
			time.Sleep(p.stall)
			return
		}
		out, _ := http.NewRequest(req.Method, "http://"+p.upstream+req.URL.RequestURI(), bytes.NewReader(body))
		out.Header = req.Header.Clone()
		resp, err := transport.RoundTrip(out)
		if err != nil {
			return
		}
		rbody, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var head bytes.Buffer
		fmt.Fprintf(&head, "HTTP/1.1 %s\r\n", resp.Status)
		resp.Header.Del("Content-Length")
		resp.Header.Write(&head)
		switch fault {
		case "truncate":
			rbody = rbody[:len(rbody)/2]
		case "flip":
			if len(rbody) > 0 {
				rbody[p.rng.IntN(len(rbody))] ^= 0x20
			}
		}
		fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", map[bool]int{true: len(rbody) * 2, false: len(rbody)}[fault == "drop-mid-body"])
		c.Write(head.Bytes())
		switch fault {
		case "close-after-headers":
			return
		case "drop-mid-body":
			c.Write(rbody) // half of what the header promised, then gone
			return
		}
		c.Write(rbody)
	}
}

// TestUpdateThroughFaultProxy: 30% of HTTP exchanges broken in every way
// the proxy knows; the update completes, and the bytes on the wire stay
// within 1.3 times the ciphertext on the native API.
func TestUpdateThroughFaultProxy(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h := newHarness(t)
			const size = 256 << 10
			h.publish("1.0.4", firmware.Healthy, size)
			upstream := h.serverURL[len("http://"):]
			px := startFaultProxy(t, upstream, 0.3, 42, 400*time.Millisecond)
			d := newDev(h, "dev-"+api, api)
			d.configHook = func(c *agent.Config) {
				c.Server = px.URL()
				c.RequestTimeout = 200 * time.Millisecond
				c.Retry = agent.RetryPolicy{Attempts: 12, Base: time.Millisecond, Max: 10 * time.Millisecond}
				c.ChunkRetries = 20
			}
			var res agent.Result
			var err error
			for try := 0; try < 10 && !res.Updated; try++ {
				if err = d.powerOn(); err != nil {
					t.Fatal(err)
				}
				res, err = d.agent.CheckOnce(context.Background())
			}
			if !res.Updated {
				t.Fatalf("no update through the faulty proxy: %v (faults %v)", err, px.kinds)
			}
			wire := px.wire.Load()
			ciphertext := int64(size/16+1) * 16
			ratio := float64(wire) / float64(ciphertext)
			px.rate = 0
			d.settle(t, nil)
			if d.running() != "1.0.4" {
				t.Fatalf("running %s", d.running())
			}
			t.Logf("%s API: faults %v; %d bytes on the wire for %d of ciphertext: %.2fx", api, px.kinds, wire, ciphertext, ratio)
			if api == agent.APINative && ratio > 1.3 {
				t.Fatalf("%.2fx the ciphertext on the wire, limit 1.3x", ratio)
			}
		})
	}
}
