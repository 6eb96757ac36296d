package protocol

import "time"

// CreateRollout is the body of POST /v1/admin/rollouts. Durations are Go
// duration strings ("1h", "90m"); empty fields take the server's defaults.
type CreateRollout struct {
	Release       string   `json:"release"`
	Hardware      string   `json:"hardware,omitempty"`
	Selector      string   `json:"selector,omitempty"`
	Devices       []string `json:"devices,omitempty"`
	Waves         string   `json:"waves,omitempty"`
	Soak          string   `json:"soak,omitempty"`
	MaxFailures   string   `json:"max_failures,omitempty"`
	MinOutcomes   *int     `json:"min_outcomes,omitempty"`
	SilentTimeout string   `json:"silent_timeout,omitempty"`
	Windows       []string `json:"windows,omitempty"`
	// Start, if set, keeps the rollout scheduled until then.
	Start     time.Time `json:"start,omitzero"`
	Supersede bool      `json:"supersede,omitempty"`
}

// RolloutAction is the body of POST /v1/admin/rollouts/{id}/pause, resume
// and abort.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

// RolloutCounts counts a rollout's devices by where they stand. Offered
// includes those downloading and silent.
type RolloutCounts struct {
	Targeted    int `json:"targeted"`
	Pending     int `json:"pending"`
	Offered     int `json:"offered"`
	Downloading int `json:"downloading"`
	Confirmed   int `json:"confirmed"`
	Failed      int `json:"failed"`
	Accepted    int `json:"accepted"` // failures an operator accepted by resuming a halt
	Silent      int `json:"silent"`
	Superseded  int `json:"superseded"`
	Removed     int `json:"removed"`
}

// RolloutWave is one wave: its size and counts.
type RolloutWave struct {
	Wave   int           `json:"wave"`
	Open   bool          `json:"open"`
	Counts RolloutCounts `json:"counts"`
}

// RolloutDevice is one device of a rollout.
type RolloutDevice struct {
	ID      string    `json:"id"`
	Wave    int       `json:"wave"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Offered time.Time `json:"offered,omitzero"`
}

// Rollout is a rollout as the admin API shows it.
type Rollout struct {
	ID            int64    `json:"id"`
	Release       string   `json:"release"`
	Hardware      string   `json:"hardware"`
	State         string   `json:"state"` // scheduled, running, paused, halted, aborted, completed
	Wave          int      `json:"wave"`  // highest open wave, 0 before the first
	Waves         int      `json:"waves"`
	WaveSpec      string   `json:"wave_spec"`
	WaveEnds      []int    `json:"wave_ends"`
	Reason        string   `json:"reason,omitempty"`
	Selector      string   `json:"selector,omitempty"`
	DeviceIDs     []string `json:"device_ids,omitempty"`
	Soak          string   `json:"soak"`
	MaxFailures   string   `json:"max_failures"`
	MinOutcomes   int      `json:"min_outcomes"`
	SilentTimeout string   `json:"silent_timeout"`
	Windows       []string `json:"windows,omitempty"`
	// Gate is what the health gate says now (hold, advance, complete,
	// halt) and why.
	Gate       string        `json:"gate"`
	GateReason string        `json:"gate_reason,omitempty"`
	Counts     RolloutCounts `json:"counts"`
	WaveCounts []RolloutWave `json:"wave_counts"`
	Start      time.Time     `json:"start,omitzero"`
	WaveOpened time.Time     `json:"wave_opened,omitzero"`
	Created    time.Time     `json:"created"`
	Updated    time.Time     `json:"updated"`
	// UpToDate, in the answer to its creation, is how many devices the
	// target named that already run the release or a newer one: left out.
	UpToDate int `json:"up_to_date,omitempty"`
	// Devices is filled in by GET /v1/admin/rollouts/{id}.
	Devices []RolloutDevice `json:"devices,omitempty"`
	// Traffic, filled in by GET /v1/admin/rollouts/{id}, is what the
	// rollout's sessions put on the wire, delta and full apart.
	Traffic *Traffic `json:"traffic,omitempty"`
}

// SetLabels is the body of PATCH /v1/admin/devices/{id}/labels.
type SetLabels struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}
