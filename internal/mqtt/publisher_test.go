package mqtt

import (
	"strings"
	"testing"
)

func TestBrokerAddress(t *testing.T) {
	for _, tc := range []struct {
		url, addr string
		tls       bool
		err       string
	}{
		{url: "mqtt://broker.example", addr: "tcp://broker.example:1883"},
		{url: "tcp://10.0.0.1:1884", addr: "tcp://10.0.0.1:1884"},
		{url: "mqtts://broker.example", addr: "ssl://broker.example:8883", tls: true},
		{url: "ssl://broker.example:9999", addr: "ssl://broker.example:9999", tls: true},
		{url: "tls://[::1]:8883", addr: "ssl://[::1]:8883", tls: true},
		{url: "http://broker.example", err: `scheme "http"`},
		{url: "ws://broker.example", err: "websockets"},
		{url: "broker.example:1883", err: "want mqtt://"},
		{url: "mqtt://user:hunter22@broker.example", err: "holds credentials"},
		{url: "mqtt://broker.example/topic", err: "no path"},
	} {
		addr, _, useTLS, err := brokerAddress(tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want one saying %q", tc.url, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter22") {
				t.Errorf("%s: error %q shows the password", tc.url, err)
			}
			continue
		}
		if err != nil || addr != tc.addr || useTLS != tc.tls {
			t.Errorf("%s: %s tls=%v %v, want %s tls=%v", tc.url, addr, useTLS, err, tc.addr, tc.tls)
		}
	}
}
