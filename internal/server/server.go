// Package server is the fota update server's HTTP side: the admin API, the
// EcoWatt-compatible device API and the native device API, over a
// fota.Store and a fota.BlobStore. The device APIs are adapters over the
// update service (internal/update), where every rule of who gets what
// lives. Handlers never see a database detail, never return an internal
// error's text to a client, and never log a secret.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/internal/web"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// Limits on request bodies.
const (
	maxDeviceBody = 16 << 10
	maxAdminBody  = 64 << 10
)

// Config configures a Server.
type Config struct {
	Store   fota.Store
	Blobs   fota.BlobStore
	Trusted []*keys.PublicKey // keys a published bundle must be signed by
	Logger  *slog.Logger
	// LegacyPerDevice and LegacyOverall bound how fast EcoWatt-API
	// check-ins open sessions (update's defaults when zero).
	LegacyPerDevice, LegacyOverall update.Rate
	// MaxSessions caps concurrently active update sessions (0: no cap).
	MaxSessions int
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// SessionCacheTTL is how long a session snapshot serves chunk requests
	// before it is read again (DefaultSessionCacheTTL when 0). Replicas
	// sharing a database need it short; a server that is its store's only
	// writer can keep snapshots long, since it forgets one whenever it
	// changes the session.
	SessionCacheTTL time.Duration
	// Retention is what history the server prunes in the background,
	// every PruneEvery (update.DefaultPruneEvery when 0); the zero value
	// prunes nothing.
	Retention  update.Retention
	PruneEvery time.Duration
	// RolloutTick is how often rollouts open waves and check their gates
	// (update.DefaultRolloutTick when 0); outcomes check their rollout's
	// gate at once besides.
	RolloutTick time.Duration
	// SecureCookies marks the dashboard's cookies Secure on plain HTTP
	// too: for a server behind a proxy that terminates TLS.
	SecureCookies bool
	// ClientIPHeader, behind a proxy, is the header the dashboard reads
	// the client's address from (web.Config.ClientIPHeader).
	ClientIPHeader string
	// OnlineWithin is how recently a device must have been seen for the
	// dashboard to count it online (web.DefaultOnlineWithin when zero).
	OnlineWithin time.Duration
	// SessionChanged, if set, is called after each session state change
	// the server records: fota serve wakes the webhook dispatcher with it,
	// so outcomes go out at once rather than at its next poll.
	SessionChanged func()
	// Notifier wakes devices when a change concerns them (MQTT push);
	// none: they check on their timer.
	Notifier fota.Notifier
	// NotifyRate is how many woken devices a second are asked to check in
	// (update.DefaultNotifyRate when 0).
	NotifyRate int
}

// Server serves the fota APIs.
type Server struct {
	store      fota.Store
	blobs      fota.BlobStore
	trusted    []*keys.PublicKey
	log        *slog.Logger
	updates    *update.Service
	now        func() time.Time
	handler    http.Handler
	requestSeq atomic.Uint64
	releases   *releaseCache
	digests    *digestCache
	hot        *hotCache
	progress   *progressTracker
	metrics    *metrics
	dashboard  *web.Dashboard
	// stopBackground stops the pruner and the rollout loop and waits for
	// them.
	stopBackground func()
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Blobs == nil {
		return nil, errors.New("server: store and blobs are required")
	}
	if len(cfg.Trusted) == 0 {
		return nil, errors.New("server: no trusted public key; pass --trust keys/signing.pub")
	}
	s := &Server{
		store: cfg.Store, blobs: cfg.Blobs, trusted: cfg.Trusted, log: cfg.Logger, now: cfg.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.releases = newReleaseCache(cfg.Store)
	s.digests = newDigestCache(digestLimit)
	ttl := cfg.SessionCacheTTL
	if ttl <= 0 {
		ttl = DefaultSessionCacheTTL
	}
	s.hot = newHotCache(ttl)
	s.metrics = newMetrics(cfg.Store, cfg.Notifier)
	s.progress = newProgressTracker(cfg.Store, s.log)
	s.updates = update.New(update.Config{Store: cfg.Store, Logger: s.log, Now: s.now, Release: s.releases.get, MaxSessions: cfg.MaxSessions,
		Cache: serverCache{s}, LegacyPerDevice: cfg.LegacyPerDevice, LegacyOverall: cfg.LegacyOverall, Notifier: cfg.Notifier,
		NotifyRate: cfg.NotifyRate,
		OnStateChange: func(state, api string) {
			switch state {
			case fota.SessionConfirmed, fota.SessionRolledBack, fota.SessionFailed, fota.SessionNotApplied, fota.SessionRefused:
				s.metrics.updates.WithLabelValues(state).Inc()
			}
			if cfg.SessionChanged != nil {
				cfg.SessionChanged()
			}
		}})
	dash, err := web.New(web.Config{Store: cfg.Store, Updates: s.updates, Publish: s.Publish, MaxBundle: maxBundle,
		VerifyPassword: password.Verify, DummyVerify: password.DummyVerify, HashPassword: password.Hash, CheckPassword: password.CheckStrength, NewToken: NewToken, StatusOf: HTTPStatus,
		Logger: s.log, Now: s.now, SecureCookies: cfg.SecureCookies, OnlineWithin: cfg.OnlineWithin,
		ClientIPHeader: cfg.ClientIPHeader})
	if err != nil {
		return nil, err
	}
	s.dashboard = dash
	s.handler = s.routes()
	bgCtx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { s.updates.RunPruner(bgCtx, cfg.Retention, cfg.PruneEvery) })
	bg.Go(func() { s.updates.RunRollouts(bgCtx, cfg.RolloutTick) })
	s.stopBackground = sync.OnceFunc(func() { cancel(); bg.Wait() })
	return s, nil
}

// Close stops the pruner and the rollout loop, and writes the progress still held in memory.
// Call it after the HTTP server has stopped taking requests, and before the
// store closes.
func (s *Server) Close() {
	s.StopStreams()
	s.stopBackground()
	s.progress.close()
	s.updates.WaitNotified() // before the notifier closes
}

// StopStreams ends the dashboard's live streams, which would otherwise
// hold a graceful shutdown until its deadline: call it as shutdown begins
// (http.Server.RegisterOnShutdown).
func (s *Server) StopStreams() { s.dashboard.Close() }

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, quiet bool, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.wrap(pattern, quiet, h))
	}
	handle("GET /healthz", true, s.healthz)
	// Prometheus scrapes with the admin token (authorization: credentials).
	handle("GET /metrics", true, s.withToken(fota.ScopeMetrics, func(w http.ResponseWriter, r *http.Request) error {
		s.metrics.handler().ServeHTTP(w, r)
		return nil
	}))

	// EcoWatt-compatible API: the original Flask server's endpoints and fields.
	handle("POST /ota/check", false, s.legacyCheck)
	handle("POST /ota/chunk", true, s.legacyChunk)
	handle("POST /ota/verify", false, s.legacyVerify)
	handle("POST /ota/complete", false, s.legacyComplete)
	handle("GET /ota/status", false, s.legacyStatus)

	// Native device API.
	handle("POST /v1/device/check", false, s.device(s.nativeCheck))
	handle("GET /v1/device/sessions/{id}/chunks", true, s.device(s.nativeChunks))
	handle("GET /v1/device/sessions/{id}/macs", true, s.device(s.nativeMACs))
	handle("POST /v1/device/sessions/{id}/report", false, s.device(s.nativeReport))
	handle("GET /v1/payload/{sha256}", true, s.payload)

	// Admin API.
	handle("POST /v1/admin/releases", false, s.admin(s.publish))
	handle("GET /v1/admin/releases", false, s.admin(s.listReleases))
	handle("DELETE /v1/admin/releases/{hardware}/{version}", false, s.admin(s.deleteRelease))
	handle("POST /v1/admin/releases/{hardware}/{version}/withdraw", false, s.admin(s.withdrawRelease))
	handle("POST /v1/admin/devices", false, s.admin(s.addDevice))
	handle("GET /v1/admin/devices", false, s.admin(s.listDevices))
	handle("GET /v1/admin/devices/{id}", false, s.admin(s.getDevice))
	handle("DELETE /v1/admin/devices/{id}", false, s.admin(s.removeDevice))
	handle("PUT /v1/admin/devices/{id}/pin", false, s.admin(s.pinDevice))
	handle("PUT /v1/admin/devices/{id}/api", false, s.admin(s.setDeviceAPI))
	handle("GET /v1/admin/devices/{id}/backoffs", false, s.admin(s.listBackoffs))
	handle("DELETE /v1/admin/devices/{id}/backoffs", false, s.admin(s.clearBackoffs))
	handle("DELETE /v1/admin/devices/{id}/pin", false, s.admin(s.unpinDevice))
	handle("PATCH /v1/admin/devices/{id}/labels", false, s.admin(s.setLabels))
	handle("POST /v1/admin/rollouts", false, s.admin(s.createRollout))
	handle("GET /v1/admin/rollouts", false, s.admin(s.listRollouts))
	handle("GET /v1/admin/rollouts/{id}", false, s.admin(s.getRollout))
	handle("POST /v1/admin/rollouts/{id}/{action}", false, s.admin(s.rolloutAction))
	handle("GET /v1/admin/sessions", false, s.admin(s.listSessions))
	handle("GET /v1/admin/events", false, s.admin(s.listEvents))
	handle("POST /v1/admin/tokens", false, s.admin(s.createToken))
	handle("GET /v1/admin/tokens", false, s.withToken(fota.ScopeAdmin, s.listTokens))
	handle("DELETE /v1/admin/tokens/{name}", false, s.admin(s.revokeToken))
	handle("POST /v1/admin/webhooks", false, s.admin(s.createWebhook))
	handle("GET /v1/admin/webhooks", false, s.admin(s.listWebhooks))
	handle("DELETE /v1/admin/webhooks/{id}", false, s.admin(s.removeWebhook))
	handle("GET /v1/admin/webhooks/{id}/deliveries", false, s.admin(s.listDeliveries))

	// The dashboard: pages and forms for people; its paths are its own.
	for _, rt := range s.dashboard.Routes() {
		h := rt.Handler
		quiet := strings.HasPrefix(rt.Pattern, "GET /static/")
		handle(rt.Pattern, quiet, func(w http.ResponseWriter, r *http.Request) error {
			h.ServeHTTP(w, r)
			return nil
		})
	}

	mux.Handle("/", s.wrap("unmatched", false, func(w http.ResponseWriter, r *http.Request) error {
		return fota.Errorf(fota.ENOTFOUND, "no endpoint %s %s; see docs/PROTOCOL.md", r.Method, r.URL.Path)
	}))
	return mux
}

// requestInfo is filled in by handlers for the request log line.
type requestInfo struct {
	deviceID string
	status   int
	bytes    int64
}

type infoKey struct{}

func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

type statusWriter struct {
	http.ResponseWriter
	ri *requestInfo
}

func (w *statusWriter) WriteHeader(code int) {
	if w.ri.status == 0 {
		w.ri.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.ri.status == 0 {
		w.ri.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.ri.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap turns an error-returning handler into an http.Handler: request id,
// panic recovery, error mapping and one log line per request (debug level
// for the per-chunk routes, so info logs do not grow with every chunk).
func (s *Server) wrap(route string, quiet bool, h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &requestInfo{}
		reqID := strconv.FormatUint(s.requestSeq.Add(1), 16)
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
		sw := &statusWriter{ResponseWriter: w, ri: ri}
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic: %v", p)
				}
			}()
			return h(sw, r)
		}()
		if err != nil {
			s.writeError(sw, r, reqID, err)
		}
		s.metrics.observe(route, ri.status, time.Since(start))
		level := slog.LevelInfo
		if quiet && err == nil {
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return // the per-chunk line at debug level costs nothing unless enabled
		}
		attrs := []slog.Attr{
			slog.String("request_id", reqID), slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", ri.status), slog.Int64("bytes", ri.bytes), slog.Duration("duration", time.Since(start)),
		}
		if ri.deviceID != "" {
			attrs = append(attrs, slog.String("device_id", ri.deviceID))
		}
		if err != nil && fota.ErrorCode(err) != fota.EINTERNAL {
			attrs = append(attrs, slog.String("error", fota.ErrorMessage(err)))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// statusOf maps error codes to HTTP statuses: the one table of it.
var statusOf = map[string]int{
	fota.ECONFLICT:     http.StatusConflict,
	fota.EINTERNAL:     http.StatusInternalServerError,
	fota.EINVALID:      http.StatusBadRequest,
	fota.ENOTFOUND:     http.StatusNotFound,
	fota.EUNAUTHORIZED: http.StatusUnauthorized,
	fota.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	fota.EUNAVAILABLE:  http.StatusServiceUnavailable,
	fota.EGONE:         http.StatusGone,
	fota.EFORBIDDEN:    http.StatusForbidden,
	fota.ETOOMANY:      http.StatusTooManyRequests,
}

// HTTPStatus is the HTTP status of err's code (500 for an internal one);
// the dashboard answers by the same table.
func HTTPStatus(err error) int {
	if st, ok := statusOf[fota.ErrorCode(err)]; ok {
		return st
	}
	return http.StatusInternalServerError
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, reqID string, err error) {
	code := fota.ErrorCode(err)
	status := statusOf[code]
	if code == fota.EINTERNAL {
		// The cause goes to the log with the request id; the client gets neither.
		s.log.Error("internal error", "request_id", reqID, "route", r.URL.Path, "error", err)
	}
	if info(r).status != 0 {
		return // headers already sent: the connection carries a cut-off body
	}
	if code == fota.EUNAVAILABLE || code == fota.ETOOMANY {
		retry := 60
		var fe *fota.Error
		if errors.As(err, &fe) && fe.RetryAfter > 0 {
			retry = int((fe.RetryAfter + time.Second - 1) / time.Second)
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	if code == fota.EUNAUTHORIZED && strings.HasPrefix(r.URL.Path, "/v1/admin") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fota"`)
	}
	msg := fota.ErrorMessage(err)
	if code == fota.EINTERNAL {
		msg = "internal error (request " + reqID + ")"
	}
	writeJSON(w, status, protocol.ErrorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	// An error body may echo a path a browser was sent to: never read it
	// as anything but JSON.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// decodeJSON reads one JSON object of at most limit bytes into v, refusing
// unknown fields, keys in another letter case, duplicate keys, wrong types
// and trailing data with a message that names the problem. encoding/json
// alone matches keys case-insensitively and lets the last of two keys win:
// a proxy or firewall in front that reads the first would see another
// request than the server.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fota.Errorf(fota.ETOOLARGE, "request body is larger than %d bytes", limit)
	}
	if err != nil {
		return fota.Errorf(fota.EINVALID, "request body could not be read")
	}
	return decodeStrict(body, v)
}

// decodeStrict is decodeJSON on a body already read.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return fota.Errorf(fota.EINVALID, "request body is empty; send a JSON object")
		case errors.As(err, &typeErr):
			return fota.Errorf(fota.EINVALID, "field %q must be a %s, not a JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fota.Errorf(fota.EINVALID, "request body is not valid JSON (it ends early)")
		case errors.As(err, &syntaxErr):
			return fota.Errorf(fota.EINVALID, "request body is not valid JSON (at byte %d)", syntaxErr.Offset)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return fota.Errorf(fota.EINVALID, "request has an %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return fota.Errorf(fota.EINVALID, "request body is not a valid JSON object")
	}
	if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return fota.Errorf(fota.EINVALID, "request body has data after its JSON object (at byte %d)", len(body)-len(rest))
	}
	return checkKeys(body, jsonFields(reflect.TypeOf(v)))
}

// checkKeys refuses duplicate keys in any object of body, keys written
// with escapes (which could spell a key two ways), and top-level keys that
// are not exactly one of fields (encoding/json accepts them in another
// letter case). body is valid JSON: Decode read it. It scans the bytes by
// hand, allocating nothing for the small bodies devices send: it runs on
// every EcoWatt-API chunk request.
func checkKeys(body []byte, fields []string) error {
	type frame struct {
		object bool
		keys   int // where this object's keys start in keys
	}
	var frameBuf [8]frame
	var keyBuf [16][]byte
	stack, keys := frameBuf[:0], keyBuf[:0]
	wantKey := false
	for i := 0; i < len(body); {
		switch c := body[i]; c {
		case ' ', '\t', '\r', '\n', ':':
			i++
		case '{':
			stack = append(stack, frame{object: true, keys: len(keys)})
			wantKey = true
			i++
		case '[':
			stack = append(stack, frame{})
			wantKey = false
			i++
		case '}', ']':
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if top.object {
				keys = keys[:top.keys]
			}
			wantKey = false
			i++
		case ',':
			wantKey = len(stack) > 0 && stack[len(stack)-1].object
			i++
		case '"':
			end, escaped := i+1, false
			for body[end] != '"' {
				if body[end] == '\\' {
					escaped = true
					end++
				}
				end++
			}
			if wantKey {
				key := body[i+1 : end]
				top := stack[len(stack)-1]
				if escaped {
					return fota.Errorf(fota.EINVALID, "request has a key written with escapes; write keys plainly")
				}
				for _, k := range keys[top.keys:] {
					if bytes.Equal(k, key) {
						return fota.Errorf(fota.EINVALID, "request has the key %q twice", truncate(string(key), 40))
					}
				}
				if len(stack) == 1 && !slices.Contains(fields, string(key)) {
					return fota.Errorf(fota.EINVALID, "request has an unknown field %q (keys are case-sensitive)", truncate(string(key), 40))
				}
				keys = append(keys, key)
				wantKey = false
			}
			i = end + 1
		default: // a number, true, false or null
			for i < len(body) && !strings.ContainsRune(",}] \t\r\n", rune(body[i])) {
				i++
			}
		}
	}
	return nil
}

// jsonFields lists the JSON keys of a struct type (through pointers and
// embedded structs), cached per type.
func jsonFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if f, ok := fieldCache.Load(t); ok {
		return f.([]string)
	}
	var out []string
	if t.Kind() == reflect.Struct {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case name == "-":
			case f.Anonymous && name == "":
				out = append(out, jsonFields(f.Type)...)
			case name != "":
				out = append(out, name)
			case f.IsExported():
				out = append(out, f.Name)
			}
		}
	}
	fieldCache.Store(t, out)
	return out
}

var fieldCache sync.Map

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.store.CountTokens(r.Context()); err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	w.Header().Set("Content-Type", "text/plain")
	_, err := io.WriteString(w, "ok\n")
	return err
}
