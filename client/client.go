// Package client is the Go client of the fota server: the admin API (used
// by the fota CLI) and the native device API (used by the device agent).
package client

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// APIError is an error answer from the server.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After (429, 503), or 0.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
}

// Temporary reports whether retrying later may succeed (server faults,
// overload, rate limits).
func (e *APIError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

func decodeError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return ErrorFromAnswer(resp, body)
}

// ErrorFromAnswer is the APIError of an error answer whose body was read.
func ErrorFromAnswer(resp *http.Response, body []byte) *APIError {
	retry := RetryAfter(resp.Header)
	var eb protocol.ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		return &APIError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error, RetryAfter: retry}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Message: msg, RetryAfter: retry}
}

// RetryAfter reads a Retry-After header in seconds (the form fota serve
// sends); 0 if absent or in another form. Bounded to a day, so a broken or
// hostile answer cannot silence a device for longer.
func RetryAfter(h http.Header) time.Duration {
	secs, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After")))
	if err != nil || secs <= 0 {
		return 0
	}
	return time.Duration(min(secs, 24*60*60)) * time.Second
}

func baseURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("server URL %q: want http://host:port or https://host:port", server)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Admin calls the admin API with a bearer token.
type Admin struct {
	base  string
	token string
	HTTP  *http.Client
}

// NewAdmin returns a client for server (http://host:port) and token.
func NewAdmin(server, token string) (*Admin, error) {
	base, err := baseURL(server)
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, errors.New("no admin token (pass --token or set FOTA_TOKEN)")
	}
	return &Admin{base: base, token: token, HTTP: &http.Client{Timeout: 10 * time.Minute}}, nil
}

func (a *Admin) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

func (a *Admin) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return a.do(ctx, method, path, body, "application/json", out)
}

// Publish uploads a bundle. A release reaches devices only through a
// rollout or a pin: PublishRollout can make the rollout too.
func (a *Admin) Publish(ctx context.Context, bundle io.Reader) (*protocol.Release, error) {
	return a.PublishRollout(ctx, bundle, "")
}

// PublishRollout uploads a bundle and, with rollout "all", starts a
// one-wave rollout of it to every device of its hardware, superseding the
// rollouts that hold them.
func (a *Admin) PublishRollout(ctx context.Context, bundle io.Reader, rollout string) (*protocol.Release, error) {
	path := "/v1/admin/releases"
	if rollout != "" {
		path += "?rollout=" + url.QueryEscape(rollout)
	}
	var r protocol.Release
	if err := a.do(ctx, "POST", path, bundle, "application/octet-stream", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Releases lists published releases.
func (a *Admin) Releases(ctx context.Context) ([]protocol.Release, error) {
	var out []protocol.Release
	return out, a.doJSON(ctx, "GET", "/v1/admin/releases", nil, &out)
}

// DeleteRelease deletes a release no session uses.
func (a *Admin) DeleteRelease(ctx context.Context, hardware, version string) error {
	return a.doJSON(ctx, "DELETE", "/v1/admin/releases/"+url.PathEscape(hardware)+"/"+url.PathEscape(version), nil, nil)
}

// WithdrawRelease stops offering a release at once and ends the update
// sessions downloading it, telling their devices reason; the release stays
// listed, withdrawn. It returns the release and how many sessions ended.
func (a *Admin) WithdrawRelease(ctx context.Context, hardware, version, reason string) (*protocol.Withdrawn, error) {
	var out protocol.Withdrawn
	err := a.doJSON(ctx, "POST", "/v1/admin/releases/"+url.PathEscape(hardware)+"/"+url.PathEscape(version)+"/withdraw",
		protocol.WithdrawRelease{Reason: reason}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveDevice removes a device: its sessions end and its key stops
// working; its history stays. It returns how many sessions ended.
func (a *Admin) RemoveDevice(ctx context.Context, id string) (int, error) {
	var out protocol.RemovedDevice
	if err := a.doJSON(ctx, "DELETE", "/v1/admin/devices/"+url.PathEscape(id), nil, &out); err != nil {
		return 0, err
	}
	return out.SessionsEnded, nil
}

// AddDevice registers a device; the answer holds its PSK, shown only now.
func (a *Admin) AddDevice(ctx context.Context, d protocol.AddDevice) (*protocol.Device, error) {
	var out protocol.Device
	if err := a.doJSON(ctx, "POST", "/v1/admin/devices", d, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Devices lists devices.
func (a *Admin) Devices(ctx context.Context) ([]protocol.Device, error) {
	var out []protocol.Device
	return out, a.doJSON(ctx, "GET", "/v1/admin/devices", nil, &out)
}

// Device returns a device and its history.
func (a *Admin) Device(ctx context.Context, id string) (*protocol.DeviceDetail, error) {
	var out protocol.DeviceDetail
	if err := a.doJSON(ctx, "GET", "/v1/admin/devices/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pin pins a device to a release version; "" unpins it.
func (a *Admin) Pin(ctx context.Context, id, version string) error {
	path := "/v1/admin/devices/" + url.PathEscape(id) + "/pin"
	if version == "" {
		return a.doJSON(ctx, "DELETE", path, nil, nil)
	}
	return a.doJSON(ctx, "PUT", path, map[string]string{"version": version}, nil)
}

// SetAPI sets a device's API policy: native, ecowatt or both.
func (a *Admin) SetAPI(ctx context.Context, id, policy string) error {
	return a.doJSON(ctx, "PUT", "/v1/admin/devices/"+url.PathEscape(id)+"/api", protocol.SetDeviceAPI{API: policy}, nil)
}

// Backoffs lists the releases held back from a device on the EcoWatt API.
func (a *Admin) Backoffs(ctx context.Context, id string) ([]protocol.Backoff, error) {
	var out []protocol.Backoff
	return out, a.doJSON(ctx, "GET", "/v1/admin/devices/"+url.PathEscape(id)+"/backoffs", nil, &out)
}

// ClearBackoffs offers a device's held-back releases again; it returns how
// many there were.
func (a *Admin) ClearBackoffs(ctx context.Context, id string) (int, error) {
	var out struct {
		Cleared int `json:"cleared"`
	}
	return out.Cleared, a.doJSON(ctx, "DELETE", "/v1/admin/devices/"+url.PathEscape(id)+"/backoffs", nil, &out)
}

// CreateToken makes an admin API token; the answer holds its text, shown
// only now. expires 0 is for ever.
func (a *Admin) CreateToken(ctx context.Context, name, scope string, expires time.Duration) (*protocol.Token, error) {
	var out protocol.Token
	req := protocol.CreateToken{Name: name, Scope: scope, ExpiresIn: int64(expires / time.Second)}
	if err := a.doJSON(ctx, "POST", "/v1/admin/tokens", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tokens lists the admin tokens, without their text.
func (a *Admin) Tokens(ctx context.Context) ([]protocol.Token, error) {
	var out []protocol.Token
	return out, a.doJSON(ctx, "GET", "/v1/admin/tokens", nil, &out)
}

// RevokeToken revokes the token named name.
func (a *Admin) RevokeToken(ctx context.Context, name string) error {
	return a.doJSON(ctx, "DELETE", "/v1/admin/tokens/"+url.PathEscape(name), nil, nil)
}

// Sessions lists active update sessions.
func (a *Admin) Sessions(ctx context.Context) (*protocol.Sessions, error) {
	var out protocol.Sessions
	if err := a.doJSON(ctx, "GET", "/v1/admin/sessions", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Events lists recent events, newest first; device "" for all.
func (a *Admin) Events(ctx context.Context, device string, limit int) ([]protocol.Event, error) {
	q := url.Values{}
	if device != "" {
		q.Set("device", device)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []protocol.Event
	return out, a.doJSON(ctx, "GET", "/v1/admin/events?"+q.Encode(), nil, &out)
}

// ErrChunkMAC means a chunk's HMAC did not match: corrupted or forged.
var ErrChunkMAC = errors.New("chunk HMAC mismatch")

// Device calls the native device API as one device.
type Device struct {
	base string
	id   string
	psk  protocol.PSK
	HTTP *http.Client
	// Now is the device clock. Requests are signed with Now plus the offset
	// learnt from the server's Date header (see request).
	Now func() time.Time
	// OnClockCorrected, if set, is told each time the device clock is found
	// off the server's and the offset now used to sign requests.
	OnClockCorrected func(offset time.Duration)

	offset atomic.Int64 // server clock minus device clock, in nanoseconds
}

// NewDevice returns a client for server as device id with its PSK.
func NewDevice(server, id string, psk protocol.PSK) (*Device, error) {
	base, err := baseURL(server)
	if err != nil {
		return nil, err
	}
	if !protocol.ValidDeviceID(id) {
		return nil, fmt.Errorf("device id %q is not valid", id)
	}
	return &Device{base: base, id: id, psk: psk, HTTP: &http.Client{Timeout: 30 * time.Second}, Now: time.Now}, nil
}

// ClockOffset is what the device adds to its clock to sign requests: the
// server's clock minus the device's, as last learnt from a refusal; 0 until then.
func (d *Device) ClockOffset() time.Duration { return time.Duration(d.offset.Load()) }

// clockCorrectionAt is how far the server's Date must be from the time a
// refused request was signed with before the device takes the server's
// clock: far beyond what latency and the header's one-second resolution
// explain, and below protocol.MaxClockSkew, so a clock that drifted close
// to the limit is corrected as well as one past it.
const clockCorrectionAt = protocol.MaxClockSkew / 2

// request signs and sends a native request. A device clock off by more than
// protocol.MaxClockSkew makes the server refuse every request (401), and
// nothing the device could queue or retry would ever get through: so when
// a 401 comes with a Date header far from the time the request was signed
// with, the device keeps the difference as its clock offset and sends the
// request once more, freshly signed. The 401 does not say why (a stale
// timestamp and a wrong key look alike to anyone else), so the Date decides;
// a request refused for another reason is refused again, and the second
// answer's Date then agrees with the corrected clock, so there is no third try.
func (d *Device) request(ctx context.Context, method, pathAndQuery string, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, d.base+pathAndQuery, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, pathAndQuery, err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		signed := d.Now().Add(d.ClockOffset())
		if err := protocol.SignRequest(req, d.id, d.psk, body, signed); err != nil {
			return nil, fmt.Errorf("%s %s: sign: %w", method, pathAndQuery, err)
		}
		resp, err := d.HTTP.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, pathAndQuery, err)
		}
		if resp.StatusCode < 300 {
			return resp, nil
		}
		apiErr := decodeError(resp)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && d.learnClock(resp.Header, signed) {
			continue
		}
		return nil, apiErr
	}
}

// learnClock takes the server's clock from the Date header of a refusal of
// a request signed at signed, if it is far enough off to explain the
// refusal, and reports whether it did. The header is as trustworthy as the
// connection it came on (TLS in production): a forged one can only make
// the device's requests fail or sign them for another time, which an
// on-path attacker able to forge it could already delay or drop.
func (d *Device) learnClock(h http.Header, signed time.Time) bool {
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return false
	}
	// Both are whole seconds on the wire: compare them so.
	skew := date.Sub(signed.Truncate(time.Second))
	if skew.Abs() <= clockCorrectionAt {
		return false
	}
	offset := date.Sub(d.Now())
	d.offset.Store(int64(offset))
	if d.OnClockCorrected != nil {
		d.OnClockCorrected(offset)
	}
	return true
}

func (d *Device) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := d.request(ctx, "POST", path, b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("POST %s: bad answer: %w", path, err)
	}
	return nil
}

// Check asks whether an update is meant for the device.
func (d *Device) Check(ctx context.Context, req protocol.CheckRequest) (*protocol.CheckResponse, error) {
	var out protocol.CheckResponse
	if err := d.postJSON(ctx, "/v1/device/check", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Chunks fetches count chunks from index from, checks each chunk's HMAC
// under scheme (protocol.PreferredChunkMAC of the check answer's
// ChunkMACs) and calls fn with it in order. fn must not keep f.Data. A
// chunk that fails its HMAC stops the stream with ErrChunkMAC before fn
// sees it.
func (d *Device) Chunks(ctx context.Context, sessionID string, scheme protocol.ChunkMACScheme, from, count, chunkSize int, fn func(f protocol.Frame) error) error {
	path := "/v1/device/sessions/" + url.PathEscape(sessionID) + "/chunks?from=" + strconv.Itoa(from) + "&count=" + strconv.Itoa(count)
	if scheme != protocol.ChunkMACv1 {
		// v1 is asked for by saying nothing, as devices from before v2 do.
		path += "&mac=" + url.QueryEscape(string(scheme))
	}
	resp, err := d.request(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	macer := protocol.NewChunkMACer(d.psk, sessionID, scheme)
	// One buffer of up to 256 KiB for the answer (the server writes it in
	// blocks that size): a few reads of the body instead of two a chunk.
	frames := protocol.NewFrameReader(resp.Body, chunkSize, min(256<<10, count*(protocol.FrameHeaderSize+chunkSize)))
	var want [32]byte
	next := from
	for {
		f, err := frames.Next()
		if err == io.EOF {
			if next == from {
				return fmt.Errorf("GET %s: %w: empty answer", path, protocol.ErrFrame)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
		if f.Index != next {
			return fmt.Errorf("GET %s: %w: got chunk %d, expected %d", path, protocol.ErrFrame, f.Index, next)
		}
		macer.MAC(f.Index, f.Data, &want)
		if !hmac.Equal(want[:], f.MAC[:]) {
			return fmt.Errorf("chunk %d: %w", f.Index, ErrChunkMAC)
		}
		if err := fn(f); err != nil {
			return err
		}
		next++
	}
}

// Report tells the server how the update went.
func (d *Device) Report(ctx context.Context, sessionID, status, reason string) error {
	return d.ReportRelease(ctx, sessionID, "", status, reason)
}

// ReportRelease is Report naming the release the report is about (the
// signed manifest's version), which the server holds to the session's.
func (d *Device) ReportRelease(ctx context.Context, sessionID, version, status, reason string) error {
	return d.SendReport(ctx, sessionID, protocol.Report{Status: status, Reason: reason, Version: version})
}

// SendReport sends a report as it is.
func (d *Device) SendReport(ctx context.Context, sessionID string, r protocol.Report) error {
	var out map[string]string
	return d.postJSON(ctx, "/v1/device/sessions/"+url.PathEscape(sessionID)+"/report", r, &out)
}
