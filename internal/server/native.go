package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// maxChunksResponse bounds the data of one chunks request: 16 MiB, so a
// device on a fast link can take a typical image in one answer rather than
// paying a round trip every few MiB (one device, 16 MiB: 302-441 MiB/s in
// 4 MiB answers, 383-504 in one).
const maxChunksResponse = 16 << 20

// blockWriteTimeout is how long one block of a chunks answer may take to
// write. The deadline moves on with every block, so a slow device taking
// a large answer is not cut off by the server's overall write timeout as
// long as it keeps reading; one that stops reading is.
var blockWriteTimeout = time.Minute

type authedKey struct{}

// authed is the device a request was authenticated as.
type authed struct {
	ID  string
	PSK protocol.PSK
	// read is the device as authentication read it from the store, or nil
	// when its key came from the cache.
	read *fota.Device
}

func authedDevice(r *http.Request) *authed { return r.Context().Value(authedKey{}).(*authed) }

// device authenticates a native API request: the device's HMAC over
// method, request URI, device id, timestamp, nonce and body hash; a
// timestamp within protocol.MaxClockSkew; a nonce not seen before. The body
// is read (bounded) before the check and handed on in full.
func (s *Server) device(h func(w http.ResponseWriter, r *http.Request, body []byte) error) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.Header.Get(protocol.HeaderDevice)
		ts := r.Header.Get(protocol.HeaderTimestamp)
		nonce := r.Header.Get(protocol.HeaderNonce)
		sig := r.Header.Get(protocol.HeaderSignature)
		if id == "" || ts == "" || nonce == "" || sig == "" {
			return fota.Errorf(fota.EUNAUTHORIZED, "missing authentication headers (%s, %s, %s, %s); see docs/PROTOCOL.md",
				protocol.HeaderDevice, protocol.HeaderTimestamp, protocol.HeaderNonce, protocol.HeaderSignature)
		}
		if !protocol.ValidDeviceID(id) {
			return fota.Errorf(fota.EUNAUTHORIZED, "malformed %s header", protocol.HeaderDevice)
		}
		info(r).deviceID = id
		if !protocol.ValidNonce(nonce) {
			return fota.Errorf(fota.EUNAUTHORIZED, "malformed %s header: 16-64 characters of 0-9 A-Z a-z _ -", protocol.HeaderNonce)
		}
		unix, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fota.Errorf(fota.EUNAUTHORIZED, "malformed %s header: want Unix seconds", protocol.HeaderTimestamp)
		}
		now := s.now()
		if skew := now.Sub(time.Unix(unix, 0)); skew > protocol.MaxClockSkew || skew < -protocol.MaxClockSkew {
			return fota.Errorf(fota.EUNAUTHORIZED, "request timestamp is %s off the server clock (limit %s); check the device clock",
				skew.Round(time.Second).Abs(), protocol.MaxClockSkew)
		}
		mac, err := hex.DecodeString(sig)
		if err != nil || len(mac) != sha256.Size {
			return fota.Errorf(fota.EUNAUTHORIZED, "malformed %s header: want 64 hex digits", protocol.HeaderSignature)
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDeviceBody))
		if err != nil {
			return fota.Errorf(fota.ETOOLARGE, "request body is larger than %d bytes", maxDeviceBody)
		}
		key, read, err := s.deviceKey(r.Context(), id)
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			return fota.Errorf(fota.EUNAUTHORIZED, "unknown device or wrong signature")
		}
		if err != nil {
			return err
		}
		psk := key.psk
		want := protocol.RequestMAC(psk, protocol.CanonicalRequest(r.Method, r.URL.RequestURI(), id, ts, nonce, sha256.Sum256(body)))
		if !hmac.Equal(want[:], mac) {
			return fota.Errorf(fota.EUNAUTHORIZED, "unknown device or wrong signature")
		}
		// Nonces are kept a little longer than the skew window, so a replay
		// inside the window is always recognised.
		if err := s.store.UseNonce(r.Context(), id, nonce, now.Add(2*protocol.MaxClockSkew+time.Minute)); err != nil {
			if fota.ErrorCode(err) == fota.ECONFLICT {
				return fota.Errorf(fota.EUNAUTHORIZED, "replayed request: nonce already used")
			}
			return err
		}
		// The policy only once the request is proven the device's: nobody
		// else learns it.
		if _, read, err = s.admitKey(r.Context(), id, fota.APINative, key, read); err != nil {
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), authedKey{}, &authed{ID: id, PSK: psk, read: read})), body)
	}
}

func decodeBody(body []byte, v any) error { return decodeStrict(body, v) }

func (s *Server) nativeCheck(w http.ResponseWriter, r *http.Request, body []byte) error {
	var req protocol.CheckRequest
	if err := decodeBody(body, &req); err != nil {
		return err
	}
	if _, err := semver.Parse(req.Version); err != nil {
		return fota.Errorf(fota.EINVALID, "field \"version\": %q is not a semantic version like 1.0.4", truncate(req.Version, 40))
	}
	inv, err := inventory(req.Inventory)
	if err != nil {
		return err
	}
	if err := checkDeltaAbility(req.ImageSHA256, req.Delta); err != nil {
		return err
	}
	a := authedDevice(r)
	offer, why, err := s.updates.Check(r.Context(), update.CheckIn{DeviceID: a.ID, Device: a.read, API: fota.APINative,
		Running: req.Version, Hardware: req.Hardware, SecurityCounter: req.SecurityCounter, Inventory: inv,
		ImageSHA256: req.ImageSHA256, DeltaCompressions: req.Delta})
	if err != nil {
		return err
	}
	if offer == nil {
		return writeJSON(w, http.StatusOK, protocol.CheckResponse{Message: "no update available: " + why})
	}
	sess := offer.Session
	rel, err := artifact(offer.Release, sess)
	if err != nil {
		return err
	}
	base := "/v1/device/sessions/" + sess.ID
	resp := protocol.CheckResponse{
		Update: true, SessionID: sess.ID, Version: rel.Version,
		Manifest: base64.StdEncoding.EncodeToString(rel.ManifestBytes), Signature: base64.StdEncoding.EncodeToString(rel.Signature),
		ChunkSize: rel.ChunkSize, Chunks: rel.Chunks(), CiphertextSize: rel.CiphertextSize, NextChunk: sess.NextChunk,
		ChunksURL: base + "/chunks", MACsURL: base + "/macs", ReportURL: base + "/report",
		PayloadURL: "/v1/payload/" + rel.CiphertextSHA256, ChunkMACs: protocol.ChunkMACSchemes,
		InstallAfter: offer.InstallAfter.UTC(), InstallUntil: offer.InstallUntil.UTC(),
	}
	if sess.DeltaBase != "" {
		resp.Artifact, resp.FullSize = fota.ArtifactDelta, offer.Release.CiphertextSize
	}
	return writeJSON(w, http.StatusOK, resp)
}

// checkDeltaAbility checks what a device says of the image it runs and the
// patches it applies.
func checkDeltaAbility(image string, compressions []string) error {
	if image != "" && !fota.ValidBlobKey(image) {
		return fota.Errorf(fota.EINVALID, "field \"image_sha256\": want the 64 lowercase hex digits of the running image's SHA-256")
	}
	if len(compressions) > len(bundle.DeltaCompressions) {
		return fota.Errorf(fota.EINVALID, "field \"delta\": at most %d compressions", len(bundle.DeltaCompressions))
	}
	for _, c := range compressions {
		if !slices.Contains(bundle.DeltaCompressions, c) {
			return fota.Errorf(fota.EINVALID, "field \"delta\": compression %q is not one of %s", truncate(c, 20), strings.Join(bundle.DeltaCompressions, ", "))
		}
	}
	return nil
}

// artifact is what sess serves of rel, as a release: rel itself for the
// full image; for a delta, rel with the delta's manifest, signature and
// ciphertext in place of the full image's, so that chunks, MACs and
// payload are served from it by the same code.
func artifact(rel *fota.Release, sess *fota.Session) (*fota.Release, error) {
	if sess.DeltaBase == "" {
		return rel, nil
	}
	d := rel.Delta(sess.DeltaBase)
	if d == nil {
		return nil, fmt.Errorf("session %s serves a delta from %.12s… that release %s does not have", sess.ID, sess.DeltaBase, rel.Version)
	}
	view := *rel
	view.ManifestBytes, view.Signature, view.LegacySignature = d.ManifestBytes, d.Signature, nil
	view.CiphertextSize, view.CiphertextSHA256, view.BlobKey = d.CiphertextSize, d.CiphertextSHA256, d.BlobKey
	view.Deltas = nil
	return &view, nil
}

// maxInventoryText bounds the inventory's strings, which operators see.
const maxInventoryText = 64

// inventory checks what a device tells about itself: plain, short text and
// sizes that are not negative.
func inventory(in *protocol.Inventory) (*fota.Inventory, error) {
	if in == nil {
		return nil, nil
	}
	for field, v := range map[string]string{"chip": in.Chip, "agent_version": in.AgentVersion} {
		if len(v) > maxInventoryText || !fota.PlainText(v) {
			return nil, fota.Errorf(fota.EINVALID, "field \"inventory.%s\": at most %d characters of plain text", field, maxInventoryText)
		}
	}
	if in.SlotSize < 0 || in.FreeFlash < 0 {
		return nil, fota.Errorf(fota.EINVALID, "field \"inventory\": slot_size and free_flash are byte counts, not negative")
	}
	return &fota.Inventory{Chip: in.Chip, SlotSize: in.SlotSize, FreeFlash: in.FreeFlash, AgentVersion: in.AgentVersion}, nil
}

// deviceSession loads the path's session, which must belong to the device:
// a snapshot for the chunk path, from the store when fresh is set.
func (s *Server) deviceSession(r *http.Request, fresh bool) (*fota.Session, *fota.Release, error) {
	d := authedDevice(r)
	var sess *fota.Session
	var err error
	if fresh {
		sess, err = s.store.Session(r.Context(), r.PathValue("id"))
	} else {
		sess, err = s.sessionByID(r.Context(), r.PathValue("id"))
	}
	if err != nil {
		return nil, nil, err
	}
	if sess.DeviceID != d.ID {
		// Not "forbidden": whether another device's session exists is not this device's business.
		return nil, nil, fota.Errorf(fota.ENOTFOUND, "no update session %q", r.PathValue("id"))
	}
	if !fota.SessionActive(sess.State) {
		return nil, nil, sessionEnded(sess)
	}
	rel, err := s.releases.get(r.Context(), sess.ReleaseID)
	if err != nil {
		return nil, nil, err
	}
	if rel, err = artifact(rel, sess); err != nil {
		return nil, nil, err
	}
	return sess, rel, nil
}

// sessionEnded is the 410 for a request on an ended session, with why it
// ended where the server ended it (a withdrawn release, a removed device,
// a narrowed policy), so the device's log says what happened.
func sessionEnded(sess *fota.Session) error {
	if sess.State == fota.SessionAbandoned && sess.Reason != "" {
		return fota.Errorf(fota.EGONE, "update session %s has ended (%s: %s); check for updates again", sess.ID, sess.State, sess.Reason)
	}
	return fota.Errorf(fota.EGONE, "update session %s has ended (%s); check for updates again", sess.ID, sess.State)
}

// chunkRange reads ?from=N&count=M of a chunks request, bounded by the
// release, by the response size limit and by how far ahead of the
// download a device may fetch.
func (s *Server) chunkRange(r *http.Request, rel *fota.Release, sess *fota.Session) (from, count int, err error) {
	if from, count, err = parseRange(r, rel); err != nil {
		return 0, 0, err
	}
	if far, next := s.hot.tooFarAhead(sess, from); far {
		return 0, 0, fota.Errorf(fota.EINVALID, "chunk %d is too far ahead of the download (at chunk %d); fetch chunks in order", from, next)
	}
	return from, min(count, max(1, maxChunksResponse/rel.ChunkSize)), nil
}

// parseRange reads ?from=N&count=M (count 1 when left out), bounded by the
// release's last chunk.
func parseRange(r *http.Request, rel *fota.Release) (from, count int, err error) {
	q := r.URL.Query()
	from, err = strconv.Atoi(q.Get("from"))
	if err != nil || from < 0 {
		return 0, 0, fota.Errorf(fota.EINVALID, "query parameter from=%q: want a chunk index from 0", truncate(q.Get("from"), 20))
	}
	count = 1
	if c := q.Get("count"); c != "" {
		if count, err = strconv.Atoi(c); err != nil || count < 1 {
			return 0, 0, fota.Errorf(fota.EINVALID, "query parameter count=%q: want a positive number", truncate(c, 20))
		}
	}
	total := rel.Chunks()
	if from >= total {
		return 0, 0, fota.Errorf(fota.EINVALID, "chunk %d is past the end: release %s has chunks 0 to %d", from, rel.Version, total-1)
	}
	return from, min(count, total-from), nil
}

// chunkMACScheme reads the scheme a device asks for; for v2 it returns the
// release's chunk digests too.
func (s *Server) chunkMACScheme(r *http.Request, rel *fota.Release) (protocol.ChunkMACScheme, [][32]byte, error) {
	scheme, err := protocol.ParseChunkMACScheme(r.URL.Query().Get("mac"))
	if err != nil {
		return "", nil, fota.Errorf(fota.EINVALID, "query parameter mac: %v", err)
	}
	if scheme != protocol.ChunkMACv2 {
		return scheme, nil, nil
	}
	sums, err := s.digests.get(r.Context(), rel, s.chunkDigests)
	return scheme, sums, err
}

// blockData is the most chunk data one write of a chunks answer carries.
// 256 KiB rather than 64: a quarter of the write calls and of the times the
// device is woken to read, which one device downloading alone notices
// (64 MiB: 350-424 -> 453-521 MiB/s with the device's reads grown alike).
const blockData = 256 << 10

// blockPools hold the buffers of chunks answers in three sizes, so that a
// request takes no more memory than its block needs: a slow device fetching
// one chunk holds 4 KiB, the agent's 16-chunk requests 64 KiB, and only
// large requests a whole block, however many devices wait at once.
var blockPools = [...]struct {
	size int
	pool sync.Pool
}{
	{size: 4 << 10},
	{size: 64<<10 + 64*protocol.FrameHeaderSize},
	{size: blockData + blockData/256*protocol.FrameHeaderSize},
}

// getBlock returns a buffer of at least n bytes and the pool to return it to.
func getBlock(n int) (*[]byte, *sync.Pool) {
	p := &blockPools[len(blockPools)-1]
	for i := range len(blockPools) - 1 {
		if n <= blockPools[i].size {
			p = &blockPools[i]
			break
		}
	}
	if b, ok := p.pool.Get().(*[]byte); ok && cap(*b) >= n {
		return b, &p.pool
	}
	b := make([]byte, max(n, p.size))
	return &b, &p.pool
}

func (s *Server) nativeChunks(w http.ResponseWriter, r *http.Request, _ []byte) error {
	sess, rel, err := s.deviceSession(r, false)
	if err != nil {
		return err
	}
	from, count, err := s.chunkRange(r, rel, sess)
	if err != nil {
		return err
	}
	scheme, sums, err := s.chunkMACScheme(r, rel)
	if err != nil {
		return err
	}
	start := int64(from) * int64(rel.ChunkSize)
	end := min(int64(from+count)*int64(rel.ChunkSize), rel.CiphertextSize)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+int64(count*protocol.FrameHeaderSize), 10))
	w.Header().Set("Cache-Control", "no-store") // HMACs are per session
	macer := protocol.NewChunkMACer(authedDevice(r).PSK, sess.ID, scheme)
	// Answer in blocks of whole chunks: one pread and one write per block
	// rather than per chunk. Blocks hold blockData of data at most, and no more
	// chunks than asked for: ten thousand slow devices fetching one chunk
	// each must not hold a block apiece.
	frameSize := protocol.FrameHeaderSize + rel.ChunkSize
	perBlock := min(count, max(1, blockData/rel.ChunkSize))
	bp, pool := getBlock(perBlock * frameSize)
	defer pool.Put(bp)
	rc := http.NewResponseController(w)
	var mac [32]byte
	for i := from; i < from+count; i += perBlock {
		if count > perBlock {
			// Not every ResponseWriter can; the server's own timeout applies then.
			_ = rc.SetWriteDeadline(time.Now().Add(blockWriteTimeout))
		}
		n := min(perBlock, from+count-i)
		off := int64(i) * int64(rel.ChunkSize)
		size := int(min(int64(n)*int64(rel.ChunkSize), rel.CiphertextSize-off))
		// Read the chunks to the end of the buffer, then move each down to
		// its frame, first to last: a frame never reaches past the data of
		// the chunks still to move, so nothing is overwritten unread.
		framed := (*bp)[:n*protocol.FrameHeaderSize+size]
		staged := framed[n*protocol.FrameHeaderSize:]
		if err := s.readAt(rel, staged, off); err != nil {
			return err
		}
		at := 0
		for j := range n {
			data := staged[j*rel.ChunkSize : min((j+1)*rel.ChunkSize, size)]
			if sums != nil {
				macer.MACDigest(i+j, &sums[i+j], &mac)
			} else {
				macer.MAC(i+j, data, &mac)
			}
			protocol.AppendFrameHeader(framed[at:at], i+j, len(data), &mac)
			at += protocol.FrameHeaderSize
			at += copy(framed[at:], data)
		}
		if _, err := w.Write(framed); err != nil {
			return nil // the client went away; nothing to answer
		}
	}
	s.metrics.chunkBytes.WithLabelValues(fota.APINative).Add(float64(end - start))
	s.metrics.updateBytes.WithLabelValues(sess.Artifact()).Add(float64(end - start))
	return s.served(r.Context(), sess, rel, from+count)
}

// maxMACsResponse bounds one macs answer: 1 MiB, 32,768 MACs. A whole
// release's list in one answer grew with the release (8 MiB for 64 MiB in
// 256-byte chunks) and 32 such requests at once took 500 MiB; a device
// asks for the rest where a short answer ends.
const maxMACsResponse = 1 << 20

// macBlock is the most MACs one write of a macs answer carries: 64 KiB, so
// an answer takes a buffer of the middle pool however large it is.
const macBlock = 64 << 10 / sha256.Size

// nativeMACs answers the chunk MACs of a range. v2 MACs come from the
// release's cached chunk digests. v1 MACs cover the chunk bytes, which
// differ per session and cannot be cached, so each answer reads and hashes
// its chunks: those are bounded as a chunks answer's data is (16 MiB), and
// read a block at a time, so one v1 answer costs no more than the chunks
// it vouches for would.
//
// The range is not held to the download's position as a chunks request
// is: MACs carry no firmware and move no progress, and a device fetching
// the payload from a cache asks for them page after page before it has a
// chunk.
func (s *Server) nativeMACs(w http.ResponseWriter, r *http.Request, _ []byte) error {
	sess, rel, err := s.deviceSession(r, false)
	if err != nil {
		return err
	}
	from, count, err := parseRange(r, rel)
	if err != nil {
		return err
	}
	scheme, sums, err := s.chunkMACScheme(r, rel)
	if err != nil {
		return err
	}
	count = min(count, maxMACsResponse/sha256.Size)
	perBlock := min(count, macBlock)
	var data []byte
	if sums == nil {
		count = min(count, max(1, maxChunksResponse/rel.ChunkSize))
		perBlock = min(perBlock, max(1, blockData/rel.ChunkSize))
		bp, pool := getBlock(perBlock * rel.ChunkSize)
		defer pool.Put(bp)
		data = *bp
	}
	op, opool := getBlock(perBlock * sha256.Size)
	defer opool.Put(op)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(count*sha256.Size))
	w.Header().Set("Cache-Control", "no-store") // MACs are per session
	macer := protocol.NewChunkMACer(authedDevice(r).PSK, sess.ID, scheme)
	var mac [32]byte
	for i := from; i < from+count; i += perBlock {
		n := min(perBlock, from+count-i)
		out := (*op)[:0]
		if sums != nil {
			for j := i; j < i+n; j++ {
				macer.MACDigest(j, &sums[j], &mac)
				out = append(out, mac[:]...)
			}
		} else {
			off := int64(i) * int64(rel.ChunkSize)
			size := int(min(int64(n)*int64(rel.ChunkSize), rel.CiphertextSize-off))
			if err := s.readAt(rel, data[:size], off); err != nil {
				return fmt.Errorf("chunk macs from %d: %w", i, err)
			}
			for j := range n {
				macer.MAC(i+j, data[j*rel.ChunkSize:min((j+1)*rel.ChunkSize, size)], &mac)
				out = append(out, mac[:]...)
			}
		}
		if _, err := w.Write(out); err != nil {
			return nil // the client went away; nothing to answer
		}
	}
	return nil
}

var reportStates = map[string]string{
	"downloaded": fota.SessionDownloaded, "verified": fota.SessionVerified, "applied": fota.SessionApplied,
	"confirmed": fota.SessionConfirmed, "rolled-back": fota.SessionRolledBack, "failed": fota.SessionFailed, "refused": fota.SessionRefused,
}

func (s *Server) nativeReport(w http.ResponseWriter, r *http.Request, body []byte) error {
	var rep protocol.Report
	if err := decodeBody(body, &rep); err != nil {
		return err
	}
	state, ok := reportStates[rep.Status]
	if !ok {
		return fota.Errorf(fota.EINVALID, "status %q: want downloaded, verified, applied, confirmed, rolled-back, failed or refused", truncate(rep.Status, 40))
	}
	if !fota.PlainText(rep.Reason) {
		return fota.Errorf(fota.EINVALID, "reason must be plain text: no line breaks or other control characters")
	}
	if len(rep.Reason) > 500 {
		return fota.Errorf(fota.EINVALID, "reason is longer than 500 characters")
	}
	sess, _, err := s.deviceSession(r, true)
	if err != nil {
		return err
	}
	if rep.Artifact != "" && (rep.Artifact != fota.ArtifactDelta || state != fota.SessionFailed) {
		return fota.Errorf(fota.EINVALID, "artifact %q: only a failed report may say \"delta\" (the failure is the delta's)", truncate(rep.Artifact, 20))
	}
	if err := s.updates.Report(r.Context(), update.Report{Session: sess, API: fota.APINative, State: state, Reason: rep.Reason,
		Version: rep.Version, DeltaFailure: rep.Artifact == fota.ArtifactDelta}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "acknowledged", "state": state})
}

// payload serves a release's ciphertext by its SHA-256: public, immutable
// and cacheable (ETag, Range), so a CDN can carry a large rollout. It is
// encrypted, and devices check every chunk against their session's HMACs.
func (s *Server) payload(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("sha256")
	if !fota.ValidBlobKey(key) {
		return fota.Errorf(fota.EINVALID, "want a 64-digit hex SHA-256")
	}
	inUse, err := s.store.BlobInUse(r.Context(), key)
	if err != nil {
		return err
	}
	if !inUse {
		return fota.Errorf(fota.ENOTFOUND, "no release payload %s", key)
	}
	blob, err := s.blobs.Open(key)
	if errors.Is(err, fs.ErrNotExist) {
		return fota.Errorf(fota.ENOTFOUND, "no release payload %s", key)
	}
	if err != nil {
		return err
	}
	// A whole payload over a slow link can outlast the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Minute))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+key+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(&jsonErrors{ResponseWriter: w}, r, "", time.Time{}, io.NewSectionReader(blob, 0, blob.Size()))
	return nil
}

// jsonErrors turns the plain-text error answers of http.ServeContent (416
// for a Range past the end, 412) into the JSON every fota answer is.
type jsonErrors struct {
	http.ResponseWriter
	failed bool
}

func (j *jsonErrors) WriteHeader(status int) {
	if status < 400 {
		j.ResponseWriter.WriteHeader(status)
		return
	}
	j.failed = true
	h := j.ResponseWriter.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	j.ResponseWriter.WriteHeader(status)
	msg := "the requested range is outside the payload; ask for bytes within its size"
	if status != http.StatusRequestedRangeNotSatisfiable {
		msg = http.StatusText(status)
	}
	enc := json.NewEncoder(j.ResponseWriter)
	enc.Encode(protocol.ErrorBody{Error: msg, Code: fota.EINVALID})
}

func (j *jsonErrors) Write(p []byte) (int, error) {
	if j.failed {
		return len(p), nil // ServeContent's own text: already answered in JSON
	}
	return j.ResponseWriter.Write(p)
}
