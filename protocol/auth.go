package protocol

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Headers of an authenticated native API request.
const (
	HeaderDevice    = "X-Fota-Device"
	HeaderTimestamp = "X-Fota-Timestamp"
	HeaderNonce     = "X-Fota-Nonce"
	HeaderSignature = "X-Fota-Signature"
)

// MaxClockSkew is how far a request's timestamp may be from the server clock.
const MaxClockSkew = 5 * time.Minute

// requestDomain separates request HMACs from chunk HMACs made with the same key.
const requestDomain = "fota-request-v1\n"

// CanonicalRequest is the string a request signature covers:
//
//	fota-request-v1\n METHOD\n REQUEST-URI\n DEVICE-ID\n TIMESTAMP\n NONCE\n hex(SHA-256(body))
//
// REQUEST-URI is the path and query exactly as sent ("/v1/device/check",
// "/v1/device/sessions/ab12/chunks?from=0&count=16").
func CanonicalRequest(method, requestURI, deviceID, timestamp, nonce string, bodySHA256 [32]byte) string {
	return requestDomain + method + "\n" + requestURI + "\n" + deviceID + "\n" + timestamp + "\n" + nonce + "\n" + hex.EncodeToString(bodySHA256[:])
}

// RequestMAC is HMAC-SHA256(PSK, CanonicalRequest(...)).
func RequestMAC(psk PSK, canonical string) [32]byte {
	m := hmac.New(sha256.New, psk[:])
	m.Write([]byte(canonical))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// NewNonce returns 16 random bytes in hex.
func NewNonce() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make nonce: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// SignRequest sets the authentication headers on req, whose body is body
// (nil for none). The request URI signed is req.URL.RequestURI().
func SignRequest(req *http.Request, deviceID string, psk PSK, body []byte, now time.Time) error {
	nonce, err := NewNonce()
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	mac := RequestMAC(psk, CanonicalRequest(req.Method, req.URL.RequestURI(), deviceID, ts, nonce, sha256.Sum256(body)))
	req.Header.Set(HeaderDevice, deviceID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, hex.EncodeToString(mac[:]))
	return nil
}

// ValidNonce reports whether a nonce has the allowed form: 16 to 64
// characters of [0-9A-Za-z_-].
func ValidNonce(s string) bool {
	if len(s) < 16 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidDeviceID reports whether id is an allowed device id: 1 to 64
// characters of [0-9A-Za-z_.-], so ids are safe in paths, logs and headers.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
