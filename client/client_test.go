package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// countingTransport counts the answers by status.
type countingTransport struct {
	mu       sync.Mutex
	statuses []int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		c.mu.Lock()
		c.statuses = append(c.statuses, resp.StatusCode)
		c.mu.Unlock()
	}
	return resp, err
}

func (c *countingTransport) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.statuses
	c.statuses = nil
	return out
}

// A device whose clock is off by more than the server allows is refused
// once, takes the server's clock from the answer's Date, and is answered
// when it asks again; later requests are signed with the corrected clock.
// A request refused for another reason (a wrong key) is not retried when
// the clock agrees, and retried once only when it does not.
func TestDeviceCorrectsItsClockFromDate(t *testing.T) {
	s := testserver.New(t)
	psk := s.AddDeviceAPI("dev1", "1.0.3", "native")
	var wrongKey protocol.PSK
	wrongKey[0] = 1
	for _, row := range []struct {
		name     string
		psk      protocol.PSK
		skew     time.Duration
		wantErr  bool
		first    []int // statuses of the first Check
		second   []int // and of the next
		adjusted bool
	}{
		{name: "clock right", psk: psk, first: []int{200}, second: []int{200}},
		{name: "clock 10 minutes behind", psk: psk, skew: -10 * time.Minute, first: []int{401, 200}, second: []int{200}, adjusted: true},
		{name: "clock 10 minutes ahead", psk: psk, skew: 10 * time.Minute, first: []int{401, 200}, second: []int{200}, adjusted: true},
		{name: "clock 4 minutes ahead (inside the limit)", psk: psk, skew: 4 * time.Minute, first: []int{200}, second: []int{200}},
		{name: "clock 3 days behind", psk: psk, skew: -72 * time.Hour, first: []int{401, 200}, second: []int{200}, adjusted: true},
		{name: "wrong key", psk: wrongKey, wantErr: true, first: []int{401}, second: []int{401}},
		{name: "wrong key and clock", psk: wrongKey, skew: time.Hour, wantErr: true, first: []int{401, 401}, second: []int{401}, adjusted: true},
	} {
		t.Run(row.name, func(t *testing.T) {
			ct := &countingTransport{}
			d, err := client.NewDevice(s.URL, "dev1", row.psk)
			if err != nil {
				t.Fatal(err)
			}
			d.HTTP = &http.Client{Transport: ct}
			d.Now = func() time.Time { return time.Now().Add(row.skew) }
			var told []time.Duration
			d.OnClockCorrected = func(o time.Duration) { told = append(told, o) }
			for i, want := range [][]int{row.first, row.second} {
				_, err := d.Check(context.Background(), protocol.CheckRequest{Version: "1.0.3"})
				var ae *client.APIError
				if row.wantErr != (err != nil) || err != nil && (!errors.As(err, &ae) || ae.Status != 401 || ae.Code != "unauthorized") {
					t.Fatalf("check %d: %v", i+1, err)
				}
				if got := ct.take(); !slices.Equal(got, want) {
					t.Fatalf("check %d: answers %v, want %v", i+1, got, want)
				}
			}
			off := d.ClockOffset()
			if !row.adjusted {
				if off != 0 || len(told) != 0 {
					t.Fatalf("offset %v (told %v), want none", off, told)
				}
				return
			}
			// The Date header has whole seconds, and the request takes a while.
			if (off+row.skew).Abs() > 2*time.Second || len(told) != 1 || told[0] != off {
				t.Fatalf("offset %v (told %v) for a clock %v off", off, told, row.skew)
			}
		})
	}
}
