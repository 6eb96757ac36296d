package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// TokenPrefix starts every admin token, so leaked tokens are easy to find.
const TokenPrefix = "fota_"

// HashToken is how a token is stored: its SHA-256. Tokens are 256 random
// bits, so a fast hash is enough; the text itself is never stored.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// admin requires a valid "Authorization: Bearer <token>" whose scope
// covers the request: read for GET, admin for every change. The handler's
// context says which token acts, so the events the change records name it.
func (s *Server) admin(h func(w http.ResponseWriter, r *http.Request) error) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		scope := fota.ScopeAdmin
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			scope = fota.ScopeRead
		}
		return s.withToken(scope, h)(w, r)
	}
}

// withToken requires a token in force whose scope covers scope. Tokens are
// read from the store on every request, so a revoked one fails at once on
// every replica.
func (s *Server) withToken(scope string, h func(w http.ResponseWriter, r *http.Request) error) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || token == "" {
			return fota.Errorf(fota.EUNAUTHORIZED, "admin API needs an \"Authorization: Bearer <token>\" header (fota token create makes one)")
		}
		hash := HashToken(token)
		t, err := s.store.TokenByHash(r.Context(), hash)
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			return fota.Errorf(fota.EUNAUTHORIZED, "admin token is not valid")
		}
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(t.Hash[:], hash[:]) != 1 {
			return fota.Errorf(fota.EUNAUTHORIZED, "admin token is not valid")
		}
		now := s.now()
		switch {
		case !t.Revoked.IsZero():
			return fota.Errorf(fota.EUNAUTHORIZED, "admin token %q was revoked; ask for a new one (fota token create)", t.Name)
		case !t.InForce(now):
			return fota.Errorf(fota.EUNAUTHORIZED, "admin token %q expired at %s; ask for a new one (fota token create)",
				t.Name, t.Expires.UTC().Format(time.RFC3339))
		case !t.Allows(scope):
			return fota.Errorf(fota.EFORBIDDEN, "admin token %q has scope %s; this needs %s", t.Name, t.Scope, scope)
		}
		return h(w, r.WithContext(fota.WithActor(r.Context(), "token:"+t.Name)))
	}
}

func viewRelease(r *fota.Release) protocol.Release {
	legacy, why := update.LegacyServable(r)
	return protocol.Release{ID: r.ID, Product: r.Product, Hardware: r.Hardware, Version: r.Version, SecurityCounter: r.SecurityCounter,
		PlaintextSize: r.PlaintextSize, PlaintextSHA256: r.PlaintextSHA256, CiphertextSize: r.CiphertextSize,
		CiphertextSHA256: r.CiphertextSHA256, ChunkSize: r.ChunkSize, Chunks: r.Chunks(), KeyID: r.KeyID,
		SignatureAlg: r.SignatureAlg, LegacyAPI: legacy, NativeOnlyReason: why, Notes: r.Notes, Created: r.Created, Published: r.Published,
		Withdrawn: r.Withdrawn, Deltas: viewDeltas(r.Deltas)}
}

func viewDeltas(ds []fota.ReleaseDelta) []protocol.ReleaseDelta {
	var out []protocol.ReleaseDelta
	for _, d := range ds {
		out = append(out, protocol.ReleaseDelta{BaseVersion: d.BaseVersion, BaseSHA256: d.BaseSHA256, Compression: d.Compression,
			PatchSize: d.PatchSize, CiphertextSize: d.CiphertextSize})
	}
	return out
}

// maxBundle is the largest upload: an envelope at its limits plus the
// largest firmware's ciphertext.
// Its delta records may add up to as much again as the firmware's limit.
const maxBundle = bundle.HeaderSize + bundle.MaxManifestSize + 2*bundle.MaxSignatureSize + bundle.MaxFirmwareSize + 16 +
	bundle.MaxDeltas*(bundle.HeaderSize+bundle.MaxManifestSize+bundle.MaxSignatureSize) + bundle.MaxFirmwareSize

// publish streams an uploaded bundle into a temporary blob while checking
// it, and makes it visible only once it verified: signature by a trusted
// key first (before any ciphertext is stored), then the ciphertext's size
// and hash. A bad bundle is refused with the reason and leaves nothing.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) error {
	// Large uploads over slow links may take longer than the default deadline.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Minute))
	if err := checkPublishRollout(r.URL.Query().Get("rollout")); err != nil {
		return err
	}
	rel, err := s.Publish(r.Context(), http.MaxBytesReader(w, r.Body, maxBundle))
	if err != nil {
		return err
	}
	v := viewRelease(rel)
	ro, err := s.publishRollout(r, rel)
	if err != nil {
		return err
	}
	if ro != nil {
		v.RolloutID = ro.ID
	}
	return writeJSON(w, http.StatusCreated, v)
}

// bundleLimit fails a read past maxBundle bytes with a message that says
// so, whoever the caller is.
type bundleLimit struct {
	r    io.Reader
	left int64
}

func (l *bundleLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			return 0, fota.Errorf(fota.ETOOLARGE, "bundle is larger than %d bytes", int64(maxBundle))
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// MaxBundle is the largest bundle Publish takes.
const MaxBundle = maxBundle

// Publish verifies a bundle read from body and stores it: signature by a
// trusted key first (before any ciphertext is stored), then the
// ciphertext's size and hash; the release becomes visible only once all
// of it verified. A bad bundle is refused with the reason and leaves
// nothing. The admin API and the dashboard both publish through it.
func (s *Server) Publish(ctx context.Context, body io.Reader) (*fota.Release, error) {
	br := bufio.NewReaderSize(&bundleLimit{r: body, left: maxBundle}, 64<<10)
	env, err := bundle.ReadEnvelope(br)
	if err != nil {
		return nil, bundleError(err)
	}
	m, err := env.Verify(s.trusted...)
	if err != nil {
		return nil, bundleError(err)
	}
	if _, err := s.store.ReleaseByVersion(ctx, m.Hardware, m.Version); err == nil {
		return nil, fota.Errorf(fota.ECONFLICT, "release %s for %s exists already; publish a new version", m.Version, m.Hardware)
	}
	tmp, err := s.blobs.Create()
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Abort()
		}
	}()
	// The chunk digests v2 HMACs are made over, hashed on the way in: the
	// first device to download a new release does not wait for them.
	digests := newChunkHasher(m.ChunkSize, m.Chunks())
	if err := bundle.VerifyCiphertext(io.TeeReader(br, io.MultiWriter(tmp, digests)), m, nil, nil); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fota.Errorf(fota.ETOOLARGE, "bundle is larger than %d bytes", int64(maxBundle))
		}
		return nil, bundleError(err)
	}
	key := m.CiphertextSHA256
	existed := false
	if _, err := s.blobs.Open(key); err == nil {
		existed = true // identical ciphertext already stored (never for a fresh IV, but harmless)
	}
	if err := tmp.Commit(key); err != nil {
		return nil, err
	}
	committed = true
	deltas, deltaDigests, err := s.publishDeltas(br, m)
	if err != nil {
		if !existed {
			if inUse, _ := s.store.BlobInUse(ctx, key); !inUse {
				s.blobs.Remove(key)
			}
		}
		return nil, err
	}
	rel := &fota.Release{
		Product: m.Product, Hardware: m.Hardware, Version: m.Version, SecurityCounter: m.SecurityCounter,
		PlaintextSize: m.PlaintextSize, PlaintextSHA256: m.PlaintextSHA256, CiphertextSize: m.CiphertextSize,
		CiphertextSHA256: m.CiphertextSHA256, ChunkSize: m.ChunkSize, IV: m.IV, KeyID: m.KeyID, SignatureAlg: m.SignatureAlg,
		Notes: m.Notes, Created: m.Created, ManifestBytes: env.ManifestBytes, Signature: env.Signature,
		LegacySignature: env.LegacySignature, BlobKey: key, Deltas: deltas,
	}
	if err := s.store.CreateRelease(ctx, rel); err != nil {
		for _, k := range append([]string{key}, blobKeys(deltas)...) {
			if !existed || k != key {
				if inUse, _ := s.store.BlobInUse(ctx, k); !inUse {
					s.blobs.Remove(k)
				}
			}
		}
		return nil, err
	}
	s.digests.put(rel.BlobKey, digests.digests())
	for i, d := range deltas {
		s.digests.put(d.BlobKey, deltaDigests[i])
	}
	s.log.Info("release published", "release_version", rel.Version, "hardware", rel.Hardware, "bytes", rel.PlaintextSize, "key_id", rel.KeyID,
		"deltas", len(deltas))
	return rel, nil
}

// publishDeltas stores the delta records that follow a verified release's
// ciphertext, each verified (signature, the same release, its ciphertext's
// size and hash) before the next is read; on any error none is kept.
func (s *Server) publishDeltas(br io.Reader, full *bundle.Manifest) (deltas []fota.ReleaseDelta, digests [][][32]byte, err error) {
	var committed []string
	defer func() {
		if err != nil {
			for _, k := range committed {
				s.blobs.Remove(k)
			}
		}
	}()
	var bases []string
	for {
		env, err := bundle.ReadDelta(br)
		if errors.Is(err, io.EOF) {
			return deltas, digests, nil
		}
		if err != nil {
			return nil, nil, bundleError(err)
		}
		m, err := env.VerifyDelta(full, bases, s.trusted...)
		if err != nil {
			return nil, nil, bundleError(err)
		}
		bases = append(bases, m.BaseSHA256)
		tmp, err := s.blobs.Create()
		if err != nil {
			return nil, nil, err
		}
		hasher := newChunkHasher(m.ChunkSize, m.Chunks())
		if err := bundle.VerifyCiphertext(io.TeeReader(br, io.MultiWriter(tmp, hasher)), m, nil, nil); err != nil {
			tmp.Abort()
			return nil, nil, bundleError(fmt.Errorf("delta from %s: %w", m.BaseVersion, err))
		}
		_, openErr := s.blobs.Open(m.CiphertextSHA256)
		if err := tmp.Commit(m.CiphertextSHA256); err != nil {
			return nil, nil, err
		}
		if openErr != nil {
			committed = append(committed, m.CiphertextSHA256)
		}
		deltas = append(deltas, fota.ReleaseDelta{BaseSHA256: m.BaseSHA256, BaseVersion: m.BaseVersion, BaseSize: m.BaseSize,
			Compression: m.Compression, PatchSize: m.PatchSize, CiphertextSize: m.CiphertextSize, CiphertextSHA256: m.CiphertextSHA256,
			ManifestBytes: env.ManifestBytes, Signature: env.Signature, BlobKey: m.CiphertextSHA256})
		digests = append(digests, hasher.digests())
	}
}

// blobKeys lists the deltas' blobs.
func blobKeys(deltas []fota.ReleaseDelta) []string {
	keys := make([]string, len(deltas))
	for i, d := range deltas {
		keys[i] = d.BlobKey
	}
	return keys
}

// bundleError turns a bundle failure into a client error that names it.
func bundleError(err error) error {
	for _, e := range []error{bundle.ErrMalformed, bundle.ErrTruncated, bundle.ErrUnsupportedVersion, bundle.ErrSignature,
		bundle.ErrUntrustedKey, bundle.ErrCiphertextHash, bundle.ErrTrailingData} {
		if errors.Is(err, e) {
			return &fota.Error{Code: fota.EINVALID, Message: "bundle refused: " + err.Error(), Cause: err}
		}
	}
	if errors.Is(err, bundle.ErrTooLarge) {
		return &fota.Error{Code: fota.ETOOLARGE, Message: "bundle refused: " + err.Error(), Cause: err}
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fota.Errorf(fota.ETOOLARGE, "bundle is larger than %d bytes", int64(maxBundle))
	}
	return err
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) error {
	rels, err := s.store.Releases(r.Context(), r.URL.Query().Get("hardware"))
	if err != nil {
		return err
	}
	out := make([]protocol.Release, 0, len(rels))
	for _, rel := range rels {
		out = append(out, viewRelease(rel))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteRelease(w http.ResponseWriter, r *http.Request) error {
	rel, err := s.store.ReleaseByVersion(r.Context(), r.PathValue("hardware"), r.PathValue("version"))
	if err != nil {
		return err
	}
	if err := s.store.DeleteRelease(r.Context(), rel.ID); err != nil {
		return err
	}
	s.releases.forget(rel.ID)
	for _, key := range append([]string{rel.BlobKey}, blobKeys(rel.Deltas)...) {
		s.digests.forget(key)
		if inUse, err := s.store.BlobInUse(r.Context(), key); err == nil && !inUse {
			if err := s.blobs.Remove(key); err != nil {
				s.log.Warn("release deleted, blob left behind", "release_version", rel.Version, "blob", key, "error", err)
			}
		}
	}
	s.log.Info("release deleted", "release_version", rel.Version, "hardware", rel.Hardware)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxWithdrawReason bounds the reason, which every ended session and the
// event carry.
const maxWithdrawReason = 200

// withdrawRelease stops offering a release and ends its sessions; the
// row stays. Unlike delete it works while sessions use the release.
func (s *Server) withdrawRelease(w http.ResponseWriter, r *http.Request) error {
	var req protocol.WithdrawRelease
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	if !fota.PlainText(req.Reason) {
		return fota.Errorf(fota.EINVALID, "reason must be plain text: no line breaks or other control characters")
	}
	if len(req.Reason) > maxWithdrawReason {
		return fota.Errorf(fota.EINVALID, "reason is %d bytes; at most %d", len(req.Reason), maxWithdrawReason)
	}
	rel, ended, err := s.updates.WithdrawRelease(r.Context(), r.PathValue("hardware"), r.PathValue("version"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, protocol.Withdrawn{Release: viewRelease(rel), SessionsEnded: ended})
}

// removeDevice removes a device: its sessions end, its key stops working,
// its history stays.
func (s *Server) removeDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ended, err := s.updates.RemoveDevice(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, protocol.RemovedDevice{ID: id, SessionsEnded: ended})
}

func viewDevice(d *fota.Device) protocol.Device {
	v := protocol.Device{ID: d.ID, Hardware: d.Hardware, Version: d.Version, SecurityCounter: d.SecurityCounter,
		PinnedVersion: d.PinnedVersion, API: d.API, Created: d.Created, LastSeen: d.LastSeen, Removed: d.Removed, Labels: d.Labels}
	if inv := d.Inventory; inv != (fota.Inventory{}) {
		v.Inventory = &protocol.DeviceInventory{Inventory: protocol.Inventory{Chip: inv.Chip, SlotSize: inv.SlotSize, FreeFlash: inv.FreeFlash,
			AgentVersion: inv.AgentVersion}, Updated: inv.Updated}
	}
	return v
}

func validHardware(h string) bool {
	if h == "" || len(h) > 32 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (s *Server) addDevice(w http.ResponseWriter, r *http.Request) error {
	var req protocol.AddDevice
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	if !protocol.ValidDeviceID(req.ID) {
		return fota.Errorf(fota.EINVALID, "device id %q: want 1-64 characters of A-Z a-z 0-9 _ . -", truncate(req.ID, 70))
	}
	if !validHardware(req.Hardware) {
		return fota.Errorf(fota.EINVALID, "hardware %q: want 1-32 characters of A-Z a-z 0-9 _ . - (e.g. esp32)", truncate(req.Hardware, 40))
	}
	if _, err := semver.Parse(req.Version); err != nil {
		return fota.Errorf(fota.EINVALID, "version %q is not a semantic version like 1.0.3", truncate(req.Version, 40))
	}
	psk, err := protocol.NewPSK()
	if err != nil {
		return err
	}
	if req.API == "" {
		req.API = fota.APINative
	}
	if !fota.ValidAPIPolicy(req.API) {
		return fota.Errorf(fota.EINVALID, "api %q: want native, ecowatt or both", truncate(req.API, 20))
	}
	d := &fota.Device{ID: req.ID, Hardware: req.Hardware, Version: req.Version, SecurityCounter: req.SecurityCounter, PSK: psk, API: req.API,
		Labels: req.Labels}
	if err := s.store.CreateDevice(r.Context(), d); err != nil {
		return err
	}
	s.log.Info("device added", "device_id", d.ID, "hardware", d.Hardware, "api", d.API, "labels", fota.FormatLabels(d.Labels))
	// A rollout to every device (or to a selector it matches) takes it in,
	// as the fleet grows.
	if err := s.updates.JoinRollouts(r.Context(), d); err != nil {
		return fmt.Errorf("device %s added, but joining its rollouts failed: %w", d.ID, err)
	}
	v := viewDevice(d)
	v.PSK = psk.Hex()
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.store.Devices(r.Context())
	if err != nil {
		return err
	}
	out := make([]protocol.Device, 0, len(ds))
	for _, d := range ds {
		out = append(out, viewDevice(d))
	}
	return writeJSON(w, http.StatusOK, out)
}

func viewEvents(evs []*fota.Event) []protocol.Event {
	out := make([]protocol.Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, protocol.Event{Time: e.Time, Kind: e.Kind, DeviceID: e.DeviceID, Version: e.ReleaseVersion, SessionID: e.SessionID,
			Detail: e.Detail, Actor: e.Actor, RolloutID: e.RolloutID, API: e.API})
	}
	return out
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	evs, err := s.store.Events(r.Context(), fota.EventFilter{DeviceID: d.ID, Limit: 1000})
	if err != nil {
		return err
	}
	out := protocol.DeviceDetail{Device: viewDevice(d), History: viewEvents(evs)}
	ro, m, err := s.store.DeviceRollout(r.Context(), d.ID)
	switch {
	case err == nil:
		out.Rollout = &protocol.DeviceRollout{ID: ro.ID, Release: ro.ReleaseVersion, RolloutState: ro.State, OpenWave: ro.Wave, Wave: m.Wave,
			State: m.State, Reason: m.Reason}
	case fota.ErrorCode(err) != fota.ENOTFOUND:
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) pinDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Version string `json:"version"`
	}
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	if err := s.updates.Pin(r.Context(), r.PathValue("id"), req.Version); err != nil {
		return err
	}
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewDevice(d))
}

func (s *Server) unpinDevice(w http.ResponseWriter, r *http.Request) error {
	if err := s.updates.Unpin(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) setDeviceAPI(w http.ResponseWriter, r *http.Request) error {
	var req protocol.SetDeviceAPI
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	if !fota.ValidAPIPolicy(req.API) {
		return fota.Errorf(fota.EINVALID, "api %q: want native, ecowatt or both", truncate(req.API, 20))
	}
	if err := s.updates.SetAPIPolicy(r.Context(), r.PathValue("id"), req.API); err != nil {
		return err
	}
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewDevice(d))
}

func (s *Server) listBackoffs(w http.ResponseWriter, r *http.Request) error {
	d, err := s.store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	bs, err := s.store.Backoffs(r.Context(), d.ID)
	if err != nil {
		return err
	}
	now := s.now()
	out := make([]protocol.Backoff, 0, len(bs))
	for _, b := range bs {
		out = append(out, protocol.Backoff{Version: b.ReleaseVersion, Failures: b.Failures, Until: b.Until, Active: b.Until.After(now)})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) clearBackoffs(w http.ResponseWriter, r *http.Request) error {
	n, err := s.updates.ClearBackoffs(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int{"cleared": n})
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) error {
	sessions, err := s.store.ActiveSessions(r.Context())
	if err != nil {
		return err
	}
	traffic, err := s.store.Traffic(r.Context(), fota.TrafficFilter{})
	if err != nil {
		return err
	}
	views := make([]protocol.Session, 0, len(sessions))
	for _, sess := range sessions {
		views = append(views, viewSession(sess))
	}
	return writeJSON(w, http.StatusOK, protocol.Sessions{ActiveSessions: len(views), Sessions: views, Traffic: viewTraffic(traffic)})
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return fota.Errorf(fota.EINVALID, "limit=%q: want 1 to 10000", truncate(l, 20))
		}
		limit = n
	}
	evs, err := s.store.Events(r.Context(), fota.EventFilter{DeviceID: r.URL.Query().Get("device"), Limit: limit})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewEvents(evs))
}

// NewToken makes an admin token: the prefix and 256 random bits. Only its
// hash is ever stored.
func NewToken() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, fmt.Errorf("make token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

func viewToken(t *fota.Token) protocol.Token {
	return protocol.Token{Name: t.Name, Scope: t.Scope, Created: t.Created, Expires: t.Expires, Revoked: t.Revoked}
}

// maxTokenLife bounds --expires: a year and a day is longer than anyone
// should keep a token, and keeps the arithmetic far from overflow.
const maxTokenLife = 366 * 24 * time.Hour

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req protocol.CreateToken
	if err := decodeJSON(w, r, maxAdminBody, &req); err != nil {
		return err
	}
	// Compared in seconds: a huge expires_in must not wrap around in
	// time.Duration's nanoseconds into a token expired on arrival.
	if req.ExpiresIn < 0 || req.ExpiresIn > int64(maxTokenLife/time.Second) {
		return fota.Errorf(fota.EINVALID, "expires_in %d: want 0 (never) up to %d seconds", req.ExpiresIn, int64(maxTokenLife/time.Second))
	}
	text, hash, err := NewToken()
	if err != nil {
		return err
	}
	t := &fota.Token{Name: req.Name, Scope: req.Scope, Hash: hash}
	if req.ExpiresIn > 0 {
		t.Expires = s.now().Add(time.Duration(req.ExpiresIn) * time.Second).UTC()
	}
	if err := s.store.CreateToken(r.Context(), t); err != nil {
		return err
	}
	s.log.Info("token created", "token_name", t.Name, "scope", t.Scope, "by", fota.ActorFrom(r.Context()))
	v := viewToken(t)
	v.Text = text
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.store.Tokens(r.Context())
	if err != nil {
		return err
	}
	out := make([]protocol.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, viewToken(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.RevokeToken(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	s.log.Info("token revoked", "token_name", r.PathValue("name"), "by", fota.ActorFrom(r.Context()))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
