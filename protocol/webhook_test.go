package protocol

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// The vector was made with openssl, apart from this code:
//
//	printf '%s' '1767225600.{"id":...}' | openssl dgst -sha256 -hmac 'whsec-0123456789abcdef'
func TestWebhookSignatureVector(t *testing.T) {
	body := []byte(`{"id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","event":"device.rolled_back"}`)
	got := WebhookSignature([]byte("whsec-0123456789abcdef"), 1767225600, body)
	if want := "sha256=c2cd453ade5ece30c024c0111221dd02d72734da42d97808011b0747c24d5eb3"; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestVerifyWebhook(t *testing.T) {
	secret := []byte("whsec-0123456789abcdef")
	body := []byte(`{"id":"abc","event":"rollout.halted"}`)
	now := time.Unix(1767225600, 0)
	signed := func(ts time.Time, b []byte, key []byte) http.Header {
		h := http.Header{}
		h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(HeaderSignature, WebhookSignature(key, ts.Unix(), b))
		return h
	}
	if err := VerifyWebhook(signed(now, body, secret), body, secret, now, 0); err != nil {
		t.Fatalf("a good delivery: %v", err)
	}
	retimed := signed(now, body, secret)
	retimed.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
	noSig := signed(now, body, secret)
	noSig.Del(HeaderSignature)
	noTS := signed(now, body, secret)
	noTS.Del(HeaderTimestamp)
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"another secret", signed(now, body, []byte("whsec-another-secret!")), body, ErrWebhookSignature},
		{"body changed", signed(now, body, secret), []byte(`{"id":"abc","event":"rollout.resumed"}`), ErrWebhookSignature},
		{"timestamp changed", retimed, body, ErrWebhookSignature},
		{"no signature", noSig, body, ErrWebhookSignature},
		{"no timestamp", noTS, body, ErrWebhookSignature},
		{"replayed later", signed(now.Add(-WebhookMaxAge-time.Second), body, secret), body, ErrWebhookStale},
		{"from the future", signed(now.Add(WebhookMaxAge+time.Second), body, secret), body, ErrWebhookStale},
	} {
		if err := VerifyWebhook(tc.h, tc.body, secret, now, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A receiver may be stricter.
	if err := VerifyWebhook(signed(now.Add(-time.Minute), body, secret), body, secret, now, 30*time.Second); !errors.Is(err, ErrWebhookStale) {
		t.Fatalf("a minute old with a 30 s limit: %v", err)
	}
}
