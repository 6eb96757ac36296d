package server

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// The EcoWatt-compatible API speaks exactly the JSON of the original Flask
// server, so ESP32 devices running its OTAManager update unchanged. It is
// the weaker, legacy mode: requests are not authenticated and the chunk
// HMAC binds neither session nor device (docs/PROTOCOL.md). Since its
// requests cannot be authenticated, the update service lets them act only
// for devices whose API policy allows it, and nothing they cause is
// permanent. Deviations from the original: 400/403/404/429 for client
// mistakes and refusals instead of 500s, chunks only inside an open
// session, /ota/status answers all with a body that names no device and
// shows sessions only with an admin token.

type legacyCheckRequest struct {
	DeviceID       *string `json:"device_id"`
	CurrentVersion *string `json:"current_version"`
}

type legacyCheckResponse struct {
	UpdateAvailable bool   `json:"update_available"`
	Version         string `json:"version,omitempty"`
	OriginalSize    int64  `json:"original_size,omitempty"`
	EncryptedSize   int64  `json:"encrypted_size,omitempty"`
	TotalChunks     int    `json:"total_chunks,omitempty"`
	ChunkSize       int    `json:"chunk_size,omitempty"`
	SHA256Hash      string `json:"sha256_hash,omitempty"`
	Signature       string `json:"signature,omitempty"`
	IV              string `json:"iv,omitempty"`
	Message         string `json:"message,omitempty"`
}

func requireString(name string, v *string) (string, error) {
	if v == nil {
		return "", fota.Errorf(fota.EINVALID, "missing field %q", name)
	}
	if *v == "" {
		return "", fota.Errorf(fota.EINVALID, "field %q is empty", name)
	}
	return *v, nil
}

func deviceIDField(v *string) (string, error) {
	id, err := requireString("device_id", v)
	if err != nil {
		return "", err
	}
	if !protocol.ValidDeviceID(id) {
		return "", fota.Errorf(fota.EINVALID, "device_id must be 1-64 characters of A-Z a-z 0-9 _ . -")
	}
	return id, nil
}

func versionField(name string, v *string) (string, error) {
	s, err := requireString(name, v)
	if err != nil {
		return "", err
	}
	if _, err := semver.Parse(s); err != nil {
		return "", fota.Errorf(fota.EINVALID, "field %q: %q is not a semantic version like 1.0.4", name, truncate(s, 40))
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (s *Server) legacyCheck(w http.ResponseWriter, r *http.Request) error {
	var req legacyCheckRequest
	if err := decodeJSON(w, r, maxDeviceBody, &req); err != nil {
		return err
	}
	id, err := deviceIDField(req.DeviceID)
	if err != nil {
		return err
	}
	running, err := versionField("current_version", req.CurrentVersion)
	if err != nil {
		return err
	}
	info(r).deviceID = id
	offer, why, err := s.updates.Check(r.Context(), update.CheckIn{DeviceID: id, API: fota.APIEcoWatt, Running: running})
	if err != nil {
		return err
	}
	if offer == nil {
		return writeJSON(w, http.StatusOK, legacyCheckResponse{Message: "no update available: " + why})
	}
	rel := offer.Release
	iv, err := hex.DecodeString(rel.IV)
	if err != nil {
		return fmt.Errorf("release %d has a bad IV: %w", rel.ID, err)
	}
	return writeJSON(w, http.StatusOK, legacyCheckResponse{
		UpdateAvailable: true, Version: rel.Version, OriginalSize: rel.PlaintextSize, EncryptedSize: rel.CiphertextSize,
		TotalChunks: rel.Chunks(), ChunkSize: rel.ChunkSize, SHA256Hash: rel.PlaintextSHA256,
		Signature: base64.StdEncoding.EncodeToString(rel.LegacySignature), IV: base64.StdEncoding.EncodeToString(iv),
	})
}

// legacyTarget is the device_id and version every request after the
// check names; the handlers embed it.
type legacyTarget struct {
	DeviceID *string `json:"device_id"`
	Version  *string `json:"version"`
}

type legacyChunkRequest struct {
	legacyTarget
	ChunkNumber *int64 `json:"chunk_number"`
}

type legacyChunk struct {
	ChunkNumber int    `json:"chunk_number"`
	Data        string `json:"data"`
	Size        int    `json:"size"`
	HMAC        string `json:"hmac"`
	TotalChunks int    `json:"total_chunks"`
}

type legacyProgress struct {
	ChunksReceived int     `json:"chunks_received"`
	TotalChunks    int     `json:"total_chunks"`
	Percentage     float64 `json:"percentage"`
}

// legacySession checks the target's fields and finds the device's open
// EcoWatt-API session for that version, and the device's key: a session
// snapshot for the chunk path, from the store when fresh is set.
func (s *Server) legacySession(r *http.Request, t legacyTarget, fresh bool) (*fota.Session, *fota.Release, protocol.PSK, error) {
	var psk protocol.PSK
	deviceID, err := deviceIDField(t.DeviceID)
	if err != nil {
		return nil, nil, psk, err
	}
	version, err := requireString("version", t.Version)
	if err != nil {
		return nil, nil, psk, err
	}
	info(r).deviceID = deviceID
	ctx := r.Context()
	key, _, err := s.admittedKey(ctx, deviceID, fota.APIEcoWatt)
	if err != nil {
		return nil, nil, psk, err
	}
	psk = key.psk
	var sess *fota.Session
	if fresh {
		sess, err = s.store.ActiveSession(ctx, deviceID)
	} else {
		sess, err = s.activeSessionOf(ctx, deviceID)
	}
	if err != nil {
		return nil, nil, psk, err
	}
	if sess.API != fota.APIEcoWatt {
		// The same answer as for no session: whether the device is updating
		// on the native API is not this caller's business.
		return nil, nil, psk, fota.Errorf(fota.ENOTFOUND, "device %q has no open update session; check for updates first", deviceID)
	}
	if sess.ReleaseVersion != version {
		return nil, nil, psk, fota.Errorf(fota.EINVALID, "the open session is for version %s, not %s; call /ota/check again", sess.ReleaseVersion, truncate(version, 40))
	}
	rel, err := s.releases.get(ctx, sess.ReleaseID)
	if err != nil {
		return nil, nil, psk, err
	}
	return sess, rel, psk, nil
}

func (s *Server) legacyChunk(w http.ResponseWriter, r *http.Request) error {
	var req legacyChunkRequest
	if err := decodeJSON(w, r, maxDeviceBody, &req); err != nil {
		return err
	}
	sess, rel, psk, err := s.legacySession(r, req.legacyTarget, false)
	if err != nil {
		return err
	}
	if req.ChunkNumber == nil {
		return fota.Errorf(fota.EINVALID, "missing field %q", "chunk_number")
	}
	total := rel.Chunks()
	n := *req.ChunkNumber
	if n < 0 || n >= int64(total) {
		return fota.Errorf(fota.EINVALID, "chunk_number %d is out of range: release %s has chunks 0 to %d", n, rel.Version, total-1)
	}
	if far, next := s.hot.tooFarAhead(sess, int(n)); far {
		return fota.Errorf(fota.EINVALID, "chunk_number %d is too far ahead of the download (at chunk %d); fetch chunks in order", n, next)
	}
	idx := int(n)
	size := chunkLen(rel, idx)
	need := size + base64.StdEncoding.EncodedLen(size) + 256
	bp, pool := getBlock(need)
	defer pool.Put(bp)
	data := (*bp)[:size]
	if err := s.readChunk(rel, idx, data); err != nil {
		return err
	}
	mac := protocol.LegacyChunkMAC(psk, idx, data)
	if err := s.servedFrom(r.Context(), sess, rel, idx, idx+1); err != nil {
		return err
	}
	// The answer is this route's whole output, so it is written by hand into
	// the buffer after the chunk: same fields and order as encoding/json
	// gives legacyChunkAnswer, without its reflection and allocations.
	received := idx + 1
	out := (*bp)[size:size]
	out = append(out, `{"chunk":{"chunk_number":`...)
	out = strconv.AppendInt(out, int64(idx), 10)
	out = append(out, `,"data":"`...)
	out = base64.StdEncoding.AppendEncode(out, data)
	out = append(out, `","size":`...)
	out = strconv.AppendInt(out, int64(size), 10)
	out = append(out, `,"hmac":"`...)
	out = hex.AppendEncode(out, mac[:])
	out = append(out, `","total_chunks":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	out = append(out, `},"progress":{"chunks_received":`...)
	out = strconv.AppendInt(out, int64(received), 10)
	out = append(out, `,"total_chunks":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	out = append(out, `,"percentage":`...)
	out = strconv.AppendFloat(out, math.Round(float64(received)*10000/float64(total))/100, 'f', -1, 64)
	out = append(out, "}}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	if _, err = w.Write(out); err == nil {
		s.metrics.chunkBytes.WithLabelValues(fota.APIEcoWatt).Add(float64(size))
		s.metrics.updateBytes.WithLabelValues(fota.ArtifactFull).Add(float64(size))
	}
	return err
}

// legacyChunkAnswer is the /ota/chunk answer legacyChunk writes by hand;
// a test checks the two agree.
type legacyChunkAnswer struct {
	Chunk    legacyChunk    `json:"chunk"`
	Progress legacyProgress `json:"progress"`
}

// chunkLen is the size of chunk idx: ChunkSize, except for the last.
func chunkLen(r *fota.Release, idx int) int {
	start := int64(idx) * int64(r.ChunkSize)
	return int(min(int64(r.ChunkSize), r.CiphertextSize-start))
}

// readChunk reads chunk idx of a release into buf, which is chunkLen long.
func (s *Server) readChunk(rel *fota.Release, idx int, buf []byte) error {
	return s.readAt(rel, buf, int64(idx)*int64(rel.ChunkSize))
}

// readAt reads a release's ciphertext at off into buf.
func (s *Server) readAt(rel *fota.Release, buf []byte, off int64) error {
	blob, err := s.blobs.Open(rel.BlobKey)
	if err != nil {
		return fmt.Errorf("release %s: %w", rel.Version, err)
	}
	if _, err := blob.ReadAt(buf, off); err != nil {
		return fmt.Errorf("read %s at %d: %w", rel.Version, off, err)
	}
	return nil
}

type legacyVerifyRequest struct {
	legacyTarget
	Verified *bool `json:"verified"`
}

func (s *Server) legacyVerify(w http.ResponseWriter, r *http.Request) error {
	var req legacyVerifyRequest
	if err := decodeJSON(w, r, maxDeviceBody, &req); err != nil {
		return err
	}
	sess, _, _, err := s.legacySession(r, req.legacyTarget, true)
	if err != nil {
		return err
	}
	if req.Verified == nil {
		return fota.Errorf(fota.EINVALID, "missing field %q", "verified")
	}
	state, reason, msg := fota.SessionVerified, "", "verification recorded"
	if !*req.Verified {
		state, reason, msg = fota.SessionFailed, "device reported that verification failed", "verification failure recorded"
	}
	if err := s.updates.Report(r.Context(), update.Report{Session: sess, API: fota.APIEcoWatt, State: state, Reason: reason}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "acknowledged", "message": msg})
}

type legacyCompleteRequest struct {
	legacyTarget
	BootStatus *string `json:"boot_status"`
}

func (s *Server) legacyComplete(w http.ResponseWriter, r *http.Request) error {
	var req legacyCompleteRequest
	if err := decodeJSON(w, r, maxDeviceBody, &req); err != nil {
		return err
	}
	status, err := requireString("boot_status", req.BootStatus)
	if err != nil {
		return err
	}
	var state, reason string
	switch strings.ToLower(status) {
	case "success", "ok", "confirmed", "healthy":
		state = fota.SessionConfirmed
	case "failed", "failure", "rollback", "rolled_back", "rolled-back":
		state, reason = fota.SessionRolledBack, "device reported boot_status "+strings.ToLower(status)
	default:
		return fota.Errorf(fota.EINVALID, "boot_status %q: want \"success\" or \"failed\"", truncate(status, 40))
	}
	sess, _, _, err := s.legacySession(r, req.legacyTarget, true)
	if err != nil {
		return err
	}
	if err := s.updates.Report(r.Context(), update.Report{Session: sess, API: fota.APIEcoWatt, State: state, Reason: reason}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "acknowledged", "message": "update " + state + " recorded"})
}

func viewSession(s *fota.Session) protocol.Session {
	v := protocol.Session{SessionID: s.ID, DeviceID: s.DeviceID, Version: s.ReleaseVersion, API: s.API, State: s.State,
		ChunksReceived: s.NextChunk, TotalChunks: s.TotalChunks, Percentage: math.Round(s.Percent()*100) / 100,
		BytesServed: s.BytesServed, Started: s.Created.Format(timeFormat), Updated: s.Updated.Format(timeFormat)}
	if s.DeltaBase != "" {
		v.Artifact = fota.ArtifactDelta
	}
	return v
}

// viewTraffic is Traffic as the admin API shows it.
func viewTraffic(t fota.Traffic) *protocol.Traffic {
	return &protocol.Traffic{FullSessions: t.FullSessions, FullBytes: t.FullBytes, DeltaSessions: t.DeltaSessions,
		DeltaBytes: t.DeltaBytes, DeltaFailed: t.DeltaFailed, DeltaDone: t.DeltaDone, DeltaDoneBytes: t.DeltaDoneBytes,
		DeltaFullBytes: t.DeltaFullBytes}
}

const timeFormat = "2006-01-02T15:04:05Z07:00"

// legacyStatus answers the original firmware's diagnostics, which call it
// without a token and take anything but 200 for a server fault: 200 and a
// body that says nothing of any device. With an admin token (the original
// server's view) it lists the active sessions.
func (s *Server) legacyStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Header.Get("Authorization") == "" {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "message": "update server is up; sessions are listed only with an admin token"})
	}
	return s.admin(s.sessionsView)(w, r)
}

func (s *Server) sessionsView(w http.ResponseWriter, r *http.Request) error {
	sessions, err := s.store.ActiveSessions(r.Context())
	if err != nil {
		return err
	}
	views := make([]protocol.Session, 0, len(sessions))
	for _, sess := range sessions {
		views = append(views, viewSession(sess))
	}
	return writeJSON(w, http.StatusOK, protocol.Sessions{ActiveSessions: len(views), Sessions: views})
}
