package protocol

import "time"

// JSON bodies of the native device API and the admin API, shared by the
// server and the Go client. docs/PROTOCOL.md describes each field.

// CheckRequest is the body of POST /v1/device/check.
type CheckRequest struct {
	Version         string `json:"version"`
	Hardware        string `json:"hardware,omitempty"`
	SecurityCounter uint32 `json:"security_counter,omitempty"`
	// Inventory is what the device tells about itself; stored and shown
	// to operators, never used to decide.
	Inventory *Inventory `json:"inventory,omitempty"`
	// ImageSHA256 is the hex SHA-256 of the image the device runs (the
	// bytes of its running slot up to the image's size). With Delta it
	// lets the server offer a patch onto exactly that image.
	ImageSHA256 string `json:"image_sha256,omitempty"`
	// Delta lists the patch compressions the device can apply (heatshrink,
	// crle, none); absent: it takes full images only.
	Delta []string `json:"delta,omitempty"`
}

// Inventory is a device's description of itself.
type Inventory struct {
	Chip         string `json:"chip,omitempty"`
	SlotSize     int64  `json:"slot_size,omitempty"`  // bytes an update slot holds
	FreeFlash    int64  `json:"free_flash,omitempty"` // bytes of flash free for data
	AgentVersion string `json:"agent_version,omitempty"`
}

// CheckResponse answers it.
type CheckResponse struct {
	Update         bool   `json:"update"`
	Message        string `json:"message,omitempty"`
	SessionID      string `json:"session_id,omitempty"`
	Version        string `json:"version,omitempty"`
	Manifest       string `json:"manifest,omitempty"`  // base64 of the exact signed manifest bytes
	Signature      string `json:"signature,omitempty"` // base64
	ChunkSize      int    `json:"chunk_size,omitempty"`
	Chunks         int    `json:"chunks,omitempty"`
	CiphertextSize int64  `json:"ciphertext_size,omitempty"`
	NextChunk      int    `json:"next_chunk"`
	ChunksURL      string `json:"chunks_url,omitempty"`
	MACsURL        string `json:"macs_url,omitempty"`
	PayloadURL     string `json:"payload_url,omitempty"`
	ReportURL      string `json:"report_url,omitempty"`
	// ChunkMACs lists the chunk MAC schemes the server offers; servers from
	// before v2 leave it out, which means v1 only.
	ChunkMACs []ChunkMACScheme `json:"chunk_macs,omitempty"`
	// Artifact is "delta" when the session serves a patch: Manifest and
	// Signature are then the delta's own signed manifest (kind "delta",
	// naming the base the patch applies onto), and Chunks, CiphertextSize,
	// the URLs and the chunk MACs are the patch's. Absent: the full image.
	Artifact string `json:"artifact,omitempty"`
	// FullSize is the full image's ciphertext size when a delta is
	// offered, so the device can tell what the patch saves.
	FullSize int64 `json:"full_size,omitempty"`
	// InstallAfter and InstallUntil bound when the device may install
	// (reboot into) the update, from its rollout's maintenance windows:
	// download now, install within [InstallAfter, InstallUntil). Absent:
	// no bound on that side. A device that cannot install in time keeps
	// the verified download and checks again; the answer then has the
	// next window.
	InstallAfter time.Time `json:"install_after,omitzero"`
	InstallUntil time.Time `json:"install_until,omitzero"`
}

// Report is the body of POST /v1/device/sessions/{id}/report.
type Report struct {
	Status string `json:"status"` // downloaded, verified, applied, confirmed, rolled-back, failed, refused
	Reason string `json:"reason,omitempty"`
	// Version is the release the report is about, as the device read it in
	// the signed manifest. The server refuses a report naming another
	// release than its session's: a check answer altered on the way (an
	// older signed manifest put into a real session) then cannot make the
	// device's refusal exclude the release the session is for.
	Version string `json:"version,omitempty"`
	// Artifact "delta" on a failed report says the failure is the delta's,
	// not the release's: a patch that cannot make the signed image on this
	// device, or an answer whose delta fields do not fit it (altered on the
	// way). The server then counts no failure against the device or the
	// rollout, and offers the full image next.
	Artifact string `json:"artifact,omitempty"`
}

// Release is a published release as the admin API shows it.
type Release struct {
	ID               int64  `json:"id"`
	Product          string `json:"product"`
	Hardware         string `json:"hardware"`
	Version          string `json:"version"`
	SecurityCounter  uint32 `json:"security_counter"`
	PlaintextSize    int64  `json:"plaintext_size"`
	PlaintextSHA256  string `json:"plaintext_sha256"`
	CiphertextSize   int64  `json:"ciphertext_size"`
	CiphertextSHA256 string `json:"ciphertext_sha256"`
	ChunkSize        int    `json:"chunk_size"`
	Chunks           int    `json:"chunks"`
	KeyID            string `json:"key_id"`
	SignatureAlg     string `json:"signature_alg"`
	LegacyAPI        bool   `json:"legacy_api"` // served on the EcoWatt-compatible API too
	// RolloutID is the rollout a publish with ?rollout=all made.
	RolloutID int64 `json:"rollout_id,omitempty"`
	// NativeOnlyReason says why a release is not served on the EcoWatt API.
	NativeOnlyReason string    `json:"native_only_reason,omitempty"`
	Notes            string    `json:"notes,omitempty"`
	Created          time.Time `json:"created"`
	Published        time.Time `json:"published"`
	// Withdrawn is when an operator withdrew it; absent while offered.
	Withdrawn time.Time `json:"withdrawn,omitzero"`
	// Deltas are its delta patches, one per base image.
	Deltas []ReleaseDelta `json:"deltas,omitempty"`
}

// ReleaseDelta is a release's delta patch as the admin API shows it.
type ReleaseDelta struct {
	BaseVersion    string `json:"base_version"`
	BaseSHA256     string `json:"base_sha256"`
	Compression    string `json:"compression"`
	PatchSize      int64  `json:"patch_size"`
	CiphertextSize int64  `json:"ciphertext_size"`
}

// AddDevice is the body of POST /v1/admin/devices.
type AddDevice struct {
	ID              string `json:"id"`
	Hardware        string `json:"hardware"`
	Version         string `json:"version"`
	SecurityCounter uint32 `json:"security_counter"`
	// API is the device's API policy: native (the default), ecowatt or both.
	API string `json:"api,omitempty"`
	// Labels tag the device for rollout selectors (ring=canary).
	Labels map[string]string `json:"labels,omitempty"`
}

// SetDeviceAPI is PUT /v1/admin/devices/{id}/api.
type SetDeviceAPI struct {
	API string `json:"api"`
}

// WithdrawRelease is POST /v1/admin/releases/{hardware}/{version}/withdraw.
type WithdrawRelease struct {
	Reason string `json:"reason"` // told to devices whose sessions end, and recorded
}

// Withdrawn answers WithdrawRelease.
type Withdrawn struct {
	Release       Release `json:"release"`
	SessionsEnded int     `json:"sessions_ended"`
}

// RemovedDevice answers DELETE /v1/admin/devices/{id}.
type RemovedDevice struct {
	ID            string `json:"id"`
	SessionsEnded int    `json:"sessions_ended"`
}

// Backoff is a release held back from a device on the EcoWatt API after it
// reported a failure (GET /v1/admin/devices/{id}/backoffs).
type Backoff struct {
	Version  string    `json:"version"`
	Failures int       `json:"failures"`
	Until    time.Time `json:"until"`
	Active   bool      `json:"active"`
}

// Device is a device as the admin API shows it. PSK is set only in the
// answer to adding it: the key is shown once.
type Device struct {
	ID              string    `json:"id"`
	Hardware        string    `json:"hardware"`
	Version         string    `json:"version"`
	SecurityCounter uint32    `json:"security_counter"`
	PinnedVersion   string    `json:"pinned_version,omitempty"`
	API             string    `json:"api"`
	Created         time.Time `json:"created"`
	LastSeen        time.Time `json:"last_seen,omitzero"`
	PSK             string    `json:"psk,omitempty"`
	// Removed is when an operator removed it; absent while registered.
	Removed   time.Time         `json:"removed,omitzero"`
	Labels    map[string]string `json:"labels,omitempty"`
	Inventory *DeviceInventory  `json:"inventory,omitempty"`
}

// DeviceInventory is what a device last reported about itself, and when.
type DeviceInventory struct {
	Inventory
	Updated time.Time `json:"updated,omitzero"`
}

// DeviceDetail is GET /v1/admin/devices/{id}.
type DeviceDetail struct {
	Device  Device  `json:"device"`
	History []Event `json:"history"`
	// Rollout is the device's current rollout membership, if any.
	Rollout *DeviceRollout `json:"rollout,omitempty"`
}

// DeviceRollout is where a device stands in its rollout.
type DeviceRollout struct {
	ID           int64  `json:"id"`
	Release      string `json:"release"`
	RolloutState string `json:"rollout_state"`
	OpenWave     int    `json:"open_wave"`
	Wave         int    `json:"wave"`
	State        string `json:"state"` // the device's: pending, offered, confirmed, failed, accepted
	Reason       string `json:"reason,omitempty"`
}

// Session is an update session as the admin API (and /ota/status) shows it.
type Session struct {
	SessionID      string  `json:"session_id"`
	DeviceID       string  `json:"device_id"`
	Version        string  `json:"version"`
	API            string  `json:"api"`
	State          string  `json:"state"`
	ChunksReceived int     `json:"chunks_received"`
	TotalChunks    int     `json:"total_chunks"`
	Percentage     float64 `json:"percentage"`
	BytesServed    int64   `json:"bytes_served"`
	// Artifact is "delta" for a session that serves a patch (BytesServed
	// and the chunks are then the patch's); absent for the full image.
	Artifact string `json:"artifact,omitempty"`
	Started  string `json:"started"`
	Updated  string `json:"updated"`
}

// Sessions is GET /v1/admin/sessions and GET /ota/status.
type Sessions struct {
	ActiveSessions int       `json:"active_sessions"`
	Sessions       []Session `json:"sessions"`
	// Traffic, on the admin API only, is what all recorded sessions put on
	// the wire.
	Traffic *Traffic `json:"traffic,omitempty"`
}

// Traffic is what update sessions put on the wire, delta and full apart.
type Traffic struct {
	FullSessions  int   `json:"full_sessions"`
	FullBytes     int64 `json:"full_bytes"`
	DeltaSessions int   `json:"delta_sessions"`
	DeltaBytes    int64 `json:"delta_bytes"`
	// DeltaFailed counts the delta sessions that failed (those devices got
	// the full image next).
	DeltaFailed int `json:"delta_failed"`
	// DeltaDone counts the delta sessions served in full that did not
	// fail, DeltaDoneBytes what they were served and DeltaFullBytes what
	// their releases weigh as full images: what those devices would have
	// downloaded without deltas.
	DeltaDone      int   `json:"delta_done"`
	DeltaDoneBytes int64 `json:"delta_done_bytes"`
	DeltaFullBytes int64 `json:"delta_full_bytes"`
}

// Event is one recorded state change.
type Event struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	DeviceID  string    `json:"device_id,omitempty"`
	Version   string    `json:"version,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	Actor     string    `json:"actor,omitempty"` // who made an operator's change: "token:NAME"
	RolloutID int64     `json:"rollout_id,omitempty"`
	API       string    `json:"api,omitempty"` // of the session a session event is about
}

// CreateToken is POST /v1/admin/tokens.
type CreateToken struct {
	Name  string `json:"name"`
	Scope string `json:"scope"` // admin (when left out), read or metrics
	// ExpiresIn is how long the token lasts, in seconds; 0 for ever.
	ExpiresIn int64 `json:"expires_in,omitempty"`
}

// Token is a token as the admin API shows it. Text is set only in the
// answer to creating it: the token is shown once.
type Token struct {
	Name    string    `json:"name"`
	Scope   string    `json:"scope"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked time.Time `json:"revoked,omitzero"`
	Text    string    `json:"token,omitempty"`
}

// ErrorBody is every error answer: a message for people, a code for programs.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}
